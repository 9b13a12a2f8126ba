// One query head attending over the cached keys and values of its kv head.
#pragma once

#include "moe/kernels/activation.hpp"
#include "moe/kernels/linear.hpp"
#include "moe/kernels/softmax.hpp"

namespace moe::kernels {

// out[head_dim] = softmax(scale * q.K^T) V over positions [0, n_pos). Row t of K and
// V starts at keys + t*row_stride (the cache interleaves all kv heads of a position).
// `scores` is caller scratch of at least n_pos floats.
// The scalar reference (the template also serves any backend without a twin).
template <class K>
inline void attention(K k, const float* q, const float* keys, const float* values, int n_pos, int head_dim,
                      int row_stride, float scale, float* scores, float* out) {
  for (int t = 0; t < n_pos; ++t) scores[t] = dot(k, keys + static_cast<long>(t) * row_stride, q, head_dim) * scale;
  softmax(k, scores, n_pos);
  for (int i = 0; i < head_dim; ++i) out[i] = 0.f;
  for (int t = 0; t < n_pos; ++t) axpy(out, scores[t], values + static_cast<long>(t) * row_stride, head_dim);
}

#if MOE_SIMD
// The same sums, arranged for short heads (head_dim 16 = one AVX-512 vector): the scores
// of W positions are reduced together by one haddp, and the weighted sum of values keeps
// each W-wide slice of `out` in registers across positions instead of one axpy per
// position. (Measured on mixtral-tiny-a's dims: attention was a third of decode time.)
inline void attention(Simd, const float* q, const float* keys, const float* values, int n_pos, int head_dim, int row_stride,
                      float scale, float* scores, float* out) {
  using simd::fbatch, simd::W, simd::load;
  const int blocked = simd::whole(n_pos, W);
  for (int t = 0; t < blocked; t += W) {
    fbatch sums[W];
    alignas(64) float tails[W];
    for (int j = 0; j < W; ++j) {
      tails[j] = 0.f;
      sums[j] = simd::partial_dot(keys + static_cast<long>(t + j) * row_stride, q, head_dim, tails[j]);
    }
    ((simd::hadd_rows(sums) + fbatch::load_aligned(tails)) * fbatch(scale)).store_unaligned(scores + t);
  }
  for (int t = blocked; t < n_pos; ++t) scores[t] = dot(Simd{}, keys + static_cast<long>(t) * row_stride, q, head_dim) * scale;
  softmax(Simd{}, scores, n_pos);
  int i = 0;
  for (; i < simd::whole(head_dim, W); i += W) {
    fbatch a0(0.f), a1(0.f);  // two chains: consecutive positions do not wait on each other
    int t = 0;
    for (; t + 1 < n_pos; t += 2) {
      a0 = xsimd::fma(fbatch(scores[t]), load(values + static_cast<long>(t) * row_stride + i), a0);
      a1 = xsimd::fma(fbatch(scores[t + 1]), load(values + static_cast<long>(t + 1) * row_stride + i), a1);
    }
    if (t < n_pos) a0 = xsimd::fma(fbatch(scores[t]), load(values + static_cast<long>(t) * row_stride + i), a0);
    (a0 + a1).store_unaligned(out + i);
  }
  for (; i < head_dim; ++i) {
    float sum = 0.f;
    for (int t = 0; t < n_pos; ++t) sum += scores[t] * values[static_cast<long>(t) * row_stride + i];
    out[i] = sum;
  }
}
#endif

}  // namespace moe::kernels
