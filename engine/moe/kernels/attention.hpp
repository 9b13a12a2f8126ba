// One query head attending over the cached keys and values of its kv head.
#pragma once

#include "moe/kernels/activation.hpp"
#include "moe/kernels/linear.hpp"
#include "moe/kernels/softmax.hpp"

namespace moe::kernels {

// out[head_dim] = softmax(scale * q.K^T) V over positions [0, n_pos). The head's keys
// and values are contiguous rows of head_dim elements (the engine's cache keeps each kv
// head's positions together), f32 or f16 (T = uint16_t: the engine's f16 KV cache).
// `scores` is caller scratch of at least n_pos floats.
// The scalar reference (the template also serves any backend without a twin).
template <class K, class T>
inline void attention(K k, const float* q, const T* keys, const T* values, int n_pos, int head_dim, float scale,
                      float* scores, float* out) {
  for (int t = 0; t < n_pos; ++t) scores[t] = dot(k, keys + static_cast<long>(t) * head_dim, q, head_dim) * scale;
  softmax(k, scores, n_pos);
  for (int i = 0; i < head_dim; ++i) out[i] = 0.f;
  for (int t = 0; t < n_pos; ++t) {
    const T* v = values + static_cast<long>(t) * head_dim;
    for (int i = 0; i < head_dim; ++i) out[i] += scores[t] * widen(v[i]);
  }
}

#if MOE_SIMD
namespace simd {
// Heads of S whole vectors (head_dim 16, 32, 64 on AVX-512): q stays in registers, the
// scores of W positions are reduced together by one hadd_rows, and the weighted sum of
// values keeps up to 4 slices of `out` in registers, 8 accumulators in all, so
// consecutive positions do not wait on each other's FMA; softmax's division scales `out`
// once instead of every score (`scores` are left unnormalised). BM_attention measures it.
template <int S, class T>
[[gnu::always_inline]] inline void attention_whole(const float* q, const T* keys, const T* values, int n_pos,
                                                   float scale, float* scores, float* out) {
  constexpr int HD = S * W;
  fbatch qv[S];
  MOE_UNROLL for (int s = 0; s < S; ++s) qv[s] = load(q + s * W);
  const auto key_dot = [&](int t) {
    const T* row = keys + static_cast<long>(t) * HD;
    fbatch acc = load(row) * qv[0];
    MOE_UNROLL for (int s = 1; s < S; ++s) acc = xsimd::fma(load(row + s * W), qv[s], acc);
    return acc;
  };
  const int blocked = whole(n_pos, W), rest = n_pos - blocked;
  for (int t = 0; t < blocked; t += W) {
    fbatch sums[W];
    MOE_UNROLL for (int j = 0; j < W; ++j) sums[j] = key_dot(t + j);
    // The same positions' values, for the weighted sum below: fetched while the scores
    // are computed, not when that loop waits on them.
    const char* v = reinterpret_cast<const char*>(values + static_cast<long>(t) * HD);
    for (int b = 0; b < W * HD * static_cast<int>(sizeof(T)); b += 64) __builtin_prefetch(v + b);
    (hadd_rows(sums) * fbatch(scale)).store_unaligned(scores + t);
  }
  if (rest > 0) {  // the last positions through one hadd_rows too, padded with zeros
    fbatch sums[W];
    alignas(64) float lanes[W];
    for (int j = 0; j < W; ++j) sums[j] = j < rest ? key_dot(blocked + j) : fbatch(0.f);
    (hadd_rows(sums) * fbatch(scale)).store_aligned(lanes);
    for (int j = 0; j < rest; ++j) scores[blocked + j] = lanes[j];
  }

  const fbatch inv_sum(1.f / exp_shifted(Simd{}, scores, n_pos));  // softmax's division, applied to out

  constexpr int G = S < 4 ? S : 4;  // slices of out per pass over the positions
  constexpr int C = 8 / G;          // positions in flight
  for (int s0 = 0; s0 < S; s0 += G) {
    fbatch acc[C][G];
    MOE_UNROLL for (int c = 0; c < C; ++c) MOE_UNROLL for (int g = 0; g < G; ++g) acc[c][g] = fbatch(0.f);
    const T* v = values + s0 * W;
    const int chained = whole(n_pos, C);
    for (int t = 0; t < chained; t += C) MOE_UNROLL for (int c = 0; c < C; ++c) {
        const fbatch p(scores[t + c]);
        MOE_UNROLL for (int g = 0; g < G; ++g) acc[c][g] =
            xsimd::fma(p, load(v + static_cast<long>(t + c) * HD + g * W), acc[c][g]);
      }
    for (int t = chained; t < n_pos; ++t) {
      const fbatch p(scores[t]);
      MOE_UNROLL for (int g = 0; g < G; ++g) acc[0][g] =
          xsimd::fma(p, load(v + static_cast<long>(t) * HD + g * W), acc[0][g]);
    }
    MOE_UNROLL for (int g = 0; g < G; ++g) {
      MOE_UNROLL for (int c = 1; c < C; ++c) acc[0][g] += acc[c][g];
      (acc[0][g] * inv_sum).store_unaligned(out + (s0 + g) * W);
    }
  }
}
}  // namespace simd

template <class T>
inline void attention(Simd, const float* q, const T* keys, const T* values, int n_pos, int head_dim, float scale,
                      float* scores, float* out) {
  using simd::W;
  if (head_dim == W) return simd::attention_whole<1>(q, keys, values, n_pos, scale, scores, out);
  if (head_dim == 2 * W) return simd::attention_whole<2>(q, keys, values, n_pos, scale, scores, out);
  if (head_dim == 4 * W) return simd::attention_whole<4>(q, keys, values, n_pos, scale, scores, out);
  if (head_dim == 8 * W) return simd::attention_whole<8>(q, keys, values, n_pos, scale, scores, out);
  // Other head sizes: the reference's loops over SIMD dot, softmax and axpy.
  attention<Simd, T>(Simd{}, q, keys, values, n_pos, head_dim, scale, scores, out);
}
#endif

}  // namespace moe::kernels
