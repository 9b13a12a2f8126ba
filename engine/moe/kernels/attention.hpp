// Query heads attending over the cached keys and values of their kv head.
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

// The `group` query heads that share one kv head (grouped-query attention), held one
// after another in q and out, head g's scores at scores + g * scores_stride: attention()
// for each of them. The reference, and any backend without a twin.
// `from_memory`: the cache is not in the caches (decode; a chunk's first token): SIMD
// kernels then ask for it ahead.
template <class K, class T>
inline void attention_group(K k, const float* q, int group, const T* keys, const T* values, int n_pos, int head_dim,
                            float scale, float* scores, long scores_stride, float* out, bool from_memory = true) {
  (void)from_memory;
  for (int g = 0; g < group; ++g)
    attention(k, q + static_cast<long>(g) * head_dim, keys, values, n_pos, head_dim, scale, scores + g * scores_stride,
              out + static_cast<long>(g) * head_dim);
}

#if MOE_SIMD
namespace simd {
// Heads of S whole vectors (head_dim 16, 32, 64 on AVX-512), `group` of them over one kv
// head: the positions go in blocks whose keys (then values) every head of the group reads
// while they are in L1, so the cache is read from memory once per kv head, not once per
// query head (at long contexts a kv head's keys and values outgrow L2). Per head: q stays
// in registers, the scores of W positions are reduced together by one hadd_rows, and the
// weighted sum of values keeps 8 accumulators: up to 4 slices of `out` over 2 to 8
// positions in flight, or all 8 slices of an 8-vector head (each value row read in one
// pass), so consecutive positions do not wait on each other's FMA. They are carried from
// block to block, so each sums its positions in the same order whatever the group.
// Softmax's division scales `out` once instead of every score (`scores` are left
// unnormalised). BM_attention measures it in the caches, kernel_ab.sh's "attention"
// rows from memory.
inline constexpr int kAttentionGroupMax = 16;  // heads of one pass; more take more passes
// Keys and values stream from memory at long contexts: the scores loop asks for the keys
// this far ahead, the weighted sum for the values (bench/README.md, "Design decisions").
inline constexpr long kAttentionAheadBytes = 8192;
inline constexpr int kAttentionBlockBytes = 8192;  // a block's keys (or values): L1 holds them for the group
template <int S, class T>
[[gnu::always_inline]] inline void attention_group_whole(const float* q, int group, const T* keys, const T* values,
                                                         int n_pos, float scale, float* scores, long scores_stride,
                                                         float* out, bool ahead) {
  constexpr int HD = S * W;
  // Positions a block: about kAttentionBlockBytes of keys or values, a multiple of W and
  // of the chains below.
  constexpr int kBlock = kAttentionBlockBytes / (HD * static_cast<int>(sizeof(T))) / 16 * 16;
  constexpr int B = kBlock > 16 ? kBlock : 16;
  const int blocked = whole(n_pos, W), rest = n_pos - blocked;
  const auto* key_bytes = reinterpret_cast<const char*>(keys);
  const auto* value_bytes = reinterpret_cast<const char*>(values);
  const long kv_bytes = static_cast<long>(n_pos) * HD * static_cast<long>(sizeof(T));  // a head's keys (or values)
  if (ahead && kv_bytes > kAttentionAheadBytes)
    for (long b = 0; b < kAttentionAheadBytes; b += 64) __builtin_prefetch(key_bytes + b);
  const auto key_dot = [&](const fbatch(&qv)[S], int t) {
    const T* row = keys + static_cast<long>(t) * HD;
    fbatch acc = load(row) * qv[0];
    MOE_UNROLL for (int s = 1; s < S; ++s) acc = xsimd::fma(load(row + s * W), qv[s], acc);
    return acc;
  };
  // Head g's scores of whole vectors of positions [t0, t1), or (t0 == blocked) of the
  // last positions, through one hadd_rows too, padded with zeros.
  const auto head_scores = [&](int g, int t0, int t1, bool fetch) {
    fbatch qv[S];
    MOE_UNROLL for (int s = 0; s < S; ++s) qv[s] = load(q + g * HD + s * W);
    float* sc = scores + g * scores_stride;
    if (t0 == blocked) {
      fbatch sums[W];
      alignas(64) float lanes[W];
      for (int j = 0; j < W; ++j) sums[j] = j < rest ? key_dot(qv, blocked + j) : fbatch(0.f);
      (hadd_rows(sums) * fbatch(scale)).store_aligned(lanes);
      for (int j = 0; j < rest; ++j) sc[blocked + j] = lanes[j];
      return;
    }
    for (int t = t0; t < t1; t += W) {
      fbatch sums[W];
      MOE_UNROLL for (int j = 0; j < W; ++j) sums[j] = key_dot(qv, t + j);
      if (fetch) {
        // From memory, the keys kAttentionAheadBytes on (within the head's) and the
        // values' first kAttentionAheadBytes, for the weighted sum below, which asks for
        // the rest ahead; else the same positions' values, fetched while the scores are
        // computed, not when that loop waits on them.
        constexpr long kBytes = static_cast<long>(W) * HD * sizeof(T);
        const long at = static_cast<long>(t) * HD * static_cast<long>(sizeof(T));
        if (ahead && at + kAttentionAheadBytes < kv_bytes)
          for (long b = 0; b < kBytes; b += 64) __builtin_prefetch(key_bytes + at + kAttentionAheadBytes + b);
        if (!ahead || at < kAttentionAheadBytes)
          for (long b = 0; b < kBytes; b += 64) __builtin_prefetch(value_bytes + at + b);
      }
      (hadd_rows(sums) * fbatch(scale)).store_unaligned(sc + t);
    }
  };
  for (int b0 = 0; b0 < blocked; b0 += B) {
    const int b1 = b0 + B < blocked ? b0 + B : blocked;
    for (int g = 0; g < group; ++g) head_scores(g, b0, b1, g == 0);
  }
  if (rest > 0)
    for (int g = 0; g < group; ++g) head_scores(g, blocked, n_pos, false);

  float inv_sum[kAttentionGroupMax];  // softmax's division, applied to out
  for (int g = 0; g < group; ++g) inv_sum[g] = 1.f / exp_shifted(Simd{}, scores + g * scores_stride, n_pos);

  constexpr int G = S < 4 ? S : S == 8 ? 8 : 4;  // slices of out per pass over the positions
  constexpr int C = 8 / G;                       // positions in flight
  const int chained = whole(n_pos, C);
  for (int s0 = 0; s0 < S; s0 += G) {
    const T* v = values + s0 * W;
    const auto ask_values = [&](int b0, int b1) {  // from memory: the values of [b0, b1) kAttentionAheadBytes on
      const long at = static_cast<long>(b0) * HD * static_cast<long>(sizeof(T)) + kAttentionAheadBytes;
      const long end = static_cast<long>(b1) * HD * static_cast<long>(sizeof(T)) + kAttentionAheadBytes;
      for (long b = at; ahead && b < end && b < kv_bytes; b += 64) __builtin_prefetch(value_bytes + b);
    };
    const auto sum_values = [&](int g, int b0, int b1, fbatch(&acc)[C][G]) {
      const float* sc = scores + g * scores_stride;
      for (int t = b0; t < b1; t += C) MOE_UNROLL for (int c = 0; c < C; ++c) {
          const fbatch p(sc[t + c]);
          MOE_UNROLL for (int k = 0; k < G; ++k) acc[c][k] =
              xsimd::fma(p, load(v + static_cast<long>(t + c) * HD + k * W), acc[c][k]);
        }
    };
    const auto finish = [&](int g, fbatch(&acc)[C][G]) {  // the positions past the chains, then out
      const float* sc = scores + g * scores_stride;
      for (int t = chained; t < n_pos; ++t) {
        const fbatch p(sc[t]);
        MOE_UNROLL for (int k = 0; k < G; ++k) acc[0][k] =
            xsimd::fma(p, load(v + static_cast<long>(t) * HD + k * W), acc[0][k]);
      }
      MOE_UNROLL for (int k = 0; k < G; ++k) {
        MOE_UNROLL for (int c = 1; c < C; ++c) acc[0][k] += acc[c][k];
        (acc[0][k] * fbatch(inv_sum[g])).store_unaligned(out + g * HD + (s0 + k) * W);
      }
    };
    if (group == 1) {  // one head: its accumulators stay in registers from block to block
      fbatch acc[C][G];
      MOE_UNROLL for (int c = 0; c < C; ++c) MOE_UNROLL for (int k = 0; k < G; ++k) acc[c][k] = fbatch(0.f);
      for (int b0 = 0; b0 < chained; b0 += B) {
        const int b1 = b0 + B < chained ? b0 + B : chained;
        ask_values(b0, b1);
        sum_values(0, b0, b1, acc);
      }
      finish(0, acc);
      continue;
    }
    fbatch carry[kAttentionGroupMax][C][G];  // each head's accumulators between blocks
    for (int g = 0; g < group; ++g)
      MOE_UNROLL for (int c = 0; c < C; ++c) MOE_UNROLL for (int k = 0; k < G; ++k) carry[g][c][k] = fbatch(0.f);
    for (int b0 = 0; b0 < chained; b0 += B) {
      const int b1 = b0 + B < chained ? b0 + B : chained;
      ask_values(b0, b1);
      for (int g = 0; g < group; ++g) {  // in registers while a block lasts (carry may alias v's floats)
        fbatch acc[C][G];
        MOE_UNROLL for (int c = 0; c < C; ++c) MOE_UNROLL for (int k = 0; k < G; ++k) acc[c][k] = carry[g][c][k];
        sum_values(g, b0, b1, acc);
        MOE_UNROLL for (int c = 0; c < C; ++c) MOE_UNROLL for (int k = 0; k < G; ++k) carry[g][c][k] = acc[c][k];
      }
    }
    for (int g = 0; g < group; ++g) finish(g, carry[g]);
  }
}
}  // namespace simd

template <class T>
inline void attention_group(Simd, const float* q, int group, const T* keys, const T* values, int n_pos, int head_dim,
                            float scale, float* scores, long scores_stride, float* out, bool from_memory = true) {
  using simd::W;
  for (int g0 = 0; g0 < group; g0 += simd::kAttentionGroupMax) {
    const int n = group - g0 < simd::kAttentionGroupMax ? group - g0 : simd::kAttentionGroupMax;
    const float* qg = q + static_cast<long>(g0) * head_dim;
    float* sg = scores + g0 * scores_stride;
    float* og = out + static_cast<long>(g0) * head_dim;
    if (head_dim == W)
      simd::attention_group_whole<1>(qg, n, keys, values, n_pos, scale, sg, scores_stride, og, from_memory);
    else if (head_dim == 2 * W)
      simd::attention_group_whole<2>(qg, n, keys, values, n_pos, scale, sg, scores_stride, og, from_memory);
    else if (head_dim == 4 * W)
      simd::attention_group_whole<4>(qg, n, keys, values, n_pos, scale, sg, scores_stride, og, from_memory);
    else if (head_dim == 8 * W)
      simd::attention_group_whole<8>(qg, n, keys, values, n_pos, scale, sg, scores_stride, og, from_memory);
    else  // other head sizes: the reference's loops over SIMD dot, softmax and axpy
      for (int g = 0; g < n; ++g)
        attention<Simd, T>(Simd{}, qg + static_cast<long>(g) * head_dim, keys, values, n_pos, head_dim, scale,
                           sg + g * scores_stride, og + static_cast<long>(g) * head_dim);
  }
}

template <class T>
inline void attention(Simd, const float* q, const T* keys, const T* values, int n_pos, int head_dim, float scale,
                      float* scores, float* out) {
  attention_group(Simd{}, q, 1, keys, values, n_pos, head_dim, scale, scores, 0, out);
}
#endif

}  // namespace moe::kernels
