// One query head attending over the cached keys and values of its kv head.
#pragma once

#include "moe/kernels/activation.hpp"
#include "moe/kernels/linear.hpp"
#include "moe/kernels/softmax.hpp"

namespace moe::kernels {

// out[head_dim] = softmax(scale * q.K^T) V over positions [0, n_pos). Row t of K and
// V starts at keys + t*row_stride (the cache interleaves all kv heads of a position).
// `scores` is caller scratch of at least n_pos floats.
template <class K>
inline void attention(K k, const float* q, const float* keys, const float* values, int n_pos, int head_dim,
                      int row_stride, float scale, float* scores, float* out) {
  for (int t = 0; t < n_pos; ++t) scores[t] = dot(k, keys + static_cast<long>(t) * row_stride, q, head_dim) * scale;
  softmax(k, scores, n_pos);
  for (int i = 0; i < head_dim; ++i) out[i] = 0.f;
  for (int t = 0; t < n_pos; ++t) axpy(out, scores[t], values + static_cast<long>(t) * row_stride, head_dim);
}

}  // namespace moe::kernels
