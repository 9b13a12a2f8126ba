// Query heads attending over the cached keys and values of their kv head.
#pragma once

#include <algorithm>
#include <limits>
#include <type_traits>

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

// Consecutive tokens of a chunk, each with the `group` query heads that share one kv head
// (grouped-query attention): token i sees positions [0, n_pos + i) (causal within the
// chunk); head g of token i reads q + i * q_stride + g * head_dim and writes
// out + i * out_stride + g * head_dim. `scores`: scratch of max(group, kAttentionPairs)
// rows of scores_stride >= n_pos + tokens - 1 floats. attention() for each of them. The
// reference, and any backend without a twin.
// `from_memory`: the cache is not in the caches (decode; a chunk's first tokens): SIMD
// kernels then ask for it ahead.
template <class K, class T>
inline void attention_chunk(K k, const float* q, long q_stride, int tokens, int group, const T* keys, const T* values,
                            int n_pos, int head_dim, float scale, float* scores, long scores_stride, float* out,
                            long out_stride, bool from_memory = true) {
  (void)from_memory;
  for (int i = 0; i < tokens; ++i)
    for (int g = 0; g < group; ++g)
      attention(k, q + i * q_stride + static_cast<long>(g) * head_dim, keys, values, n_pos + i, head_dim, scale,
                scores + static_cast<long>(g) * scores_stride, out + i * out_stride + static_cast<long>(g) * head_dim);
}

// Decode (one token) over `heads` kv heads, each with `group` query heads: kv head i's
// cache at keys + i * kv_stride (values alike), its query head g reads q + (i * group +
// g) * head_dim, writes out at the same place, and scores into scores + i *
// kv_scores_stride + g * scores_stride. The reference: attention_chunk, a kv head at a
// time (the SIMD twin reads several caches side by side).
template <class K, class T>
inline void attention_kv_heads(K k, int heads, int group, const float* q, const T* keys, const T* values,
                               long kv_stride, int n_pos, int head_dim, float scale, float* scores, long scores_stride,
                               long kv_scores_stride, float* out) {
  for (int i = 0; i < heads; ++i)
    attention_chunk(k, q + static_cast<long>(i) * group * head_dim, 0, 1, group, keys + i * kv_stride,
                    values + i * kv_stride, n_pos, head_dim, scale, scores + i * kv_scores_stride, scores_stride,
                    out + static_cast<long>(i) * group * head_dim, 0);
}

// (token, query head) pairs that one pass of the SIMD kernels takes: the rows of scores
// scratch a call needs, and how many tokens of a chunk the engine hands it at once.
inline constexpr int kAttentionPairs = 16;
// kv heads whose caches decode reads side by side (attention_kv_heads): 4 with AVX2, where
// one at a time read the cache well below the probe's rate (bench/README.md, "Decode's
// attention: kv heads side by side"); 1 elsewhere, where that is not measured: a kv head
// at a time, each asking for its cache ahead.
#if defined(__AVX2__) && !defined(__AVX512F__)
inline constexpr int kAttentionKvHeads = 4;
#else
inline constexpr int kAttentionKvHeads = 1;
#endif

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
// Keys and values stream from memory at long contexts: the scores loop asks for the keys
// this far ahead, the weighted sum for the values (bench/README.md, "Design decisions").
inline constexpr long kAttentionAheadBytes = 8192;
// Decode's weighted sum of values: slices of out a pass over the positions (G), and 8 / G
// positions in flight, each in its own accumulators (8 in all).
constexpr int attention_value_slices(int S) { return S < 4 ? S : S == 8 ? 8 : 4; }
// One head's slice pass of that sum (G slices at v, heads of HD floats): positions
// [t0, t1), whole chains of C, into acc, chain c taking every C-th position from t0 + c.
// Then value_chains_finish: the positions [from, n_pos) past the chains into chain 0, the
// chains summed, scaled by inv_sum (softmax's division) into out. The decode kernels
// share them, so they sum in one order.
template <int HD, int C, int G, class T>
[[gnu::always_inline]] inline void value_chains(fbatch (&acc)[C][G], const float* sc, const T* v, int t0, int t1) {
  for (int t = t0; t < t1; t += C) MOE_UNROLL for (int c = 0; c < C; ++c) {
      const fbatch p(sc[t + c]);
      MOE_UNROLL for (int k = 0; k < G; ++k) acc[c][k] =
          xsimd::fma(p, load(v + static_cast<long>(t + c) * HD + k * W), acc[c][k]);
    }
}
template <int HD, int C, int G, class T>
[[gnu::always_inline]] inline void value_chains_finish(fbatch (&acc)[C][G], const float* sc, const T* v, int from,
                                                       int n_pos, float inv_sum, float* out) {
  for (int t = from; t < n_pos; ++t) {
    const fbatch p(sc[t]);
    MOE_UNROLL for (int k = 0; k < G; ++k) acc[0][k] =
        xsimd::fma(p, load(v + static_cast<long>(t) * HD + k * W), acc[0][k]);
  }
  MOE_UNROLL for (int k = 0; k < G; ++k) {
    MOE_UNROLL for (int c = 1; c < C; ++c) acc[0][k] += acc[c][k];
    (acc[0][k] * fbatch(inv_sum)).store_unaligned(out + k * W);
  }
}
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

  float inv_sum[kAttentionPairs];  // softmax's division, applied to out
  for (int g = 0; g < group; ++g) inv_sum[g] = 1.f / exp_shifted(Simd{}, scores + g * scores_stride, n_pos);

  constexpr int G = attention_value_slices(S), C = 8 / G;  // slices of out a pass, positions in flight
  const int chained = whole(n_pos, C);
  for (int s0 = 0; s0 < S; s0 += G) {
    const T* v = values + s0 * W;
    const auto ask_values = [&](int b0, int b1) {  // from memory: the values of [b0, b1) kAttentionAheadBytes on
      const long at = static_cast<long>(b0) * HD * static_cast<long>(sizeof(T)) + kAttentionAheadBytes;
      const long end = static_cast<long>(b1) * HD * static_cast<long>(sizeof(T)) + kAttentionAheadBytes;
      for (long b = at; ahead && b < end && b < kv_bytes; b += 64) __builtin_prefetch(value_bytes + b);
    };
    const auto sum_values = [&](int g, int b0, int b1, fbatch(&acc)[C][G]) {
      value_chains<HD>(acc, scores + g * scores_stride, v, b0, b1);
    };
    const auto finish = [&](int g, fbatch(&acc)[C][G]) {  // the positions past the chains, then out
      value_chains_finish<HD>(acc, scores + g * scores_stride, v, chained, n_pos, inv_sum[g], out + g * HD + s0 * W);
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
    fbatch carry[kAttentionPairs][C][G];  // each head's accumulators between blocks
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
// Of a kv head's keys (or values) a turn: finer turns cost more in the caches, coarser ones
// read less from memory (bench/README.md, "Decode's attention: kv heads side by side").
inline constexpr int kAttentionTurnBytes = 512;
// Decode: K kv heads at once, each with `group` query heads (K * group <= kAttentionPairs),
// their caches read side by side, R positions of each kv head in turn: K memory streams
// at once, where one kv head at a time leaves read bandwidth unused (bench/README.md,
// "Decode's attention: kv heads side by side"). A head's arithmetic is
// attention_group_whole's, in its order (scores lane by lane through hadd_rows, each
// accumulator's positions in order), so heads of up to 8 vectors get its bits; wider ones
// (128-wide on AVX2), which it does not take, sum as it would. No software prefetch.
template <int S, class T>
inline void attention_kv_heads_whole(int K, int group, const float* const* q, const T* const* keys,
                                     const T* const* values, int n_pos, float scale, float* const* scores,
                                     long scores_stride, float* const* out) {
  // R positions a turn for the scores (at most W: a hadd_rows takes W / R pairs), RV for
  // the weighted sum (whole chains).
  constexpr int HD = S * W, kRows = std::max(1, kAttentionTurnBytes / (HD * static_cast<int>(sizeof(T))));
  constexpr int R = std::min(kRows, W);
  constexpr int G = attention_value_slices(S), C = 8 / G, RV = std::max(C, kRows);
  // Scores: a turn's R positions of W / R (kv head, query head) pairs through one
  // hadd_rows, each lane to its pair's position.
  constexpr int PB = W / R;  // pairs a hadd_rows
  static_assert(PB * R == W, "a turn's positions divide the lanes");
  const int pairs = K * group;
  // Each (kv head, query head) pair's rows: its query, keys, values, scores and out.
  const float* pq[kAttentionPairs];
  const T *pk[kAttentionPairs], *pv[kAttentionPairs];
  float *ps[kAttentionPairs], *po[kAttentionPairs];
  for (int i = 0, p = 0; i < K; ++i)
    for (int g = 0; g < group; ++g, ++p) {
      pq[p] = q[i] + g * HD;
      pk[p] = keys[i];
      pv[p] = values[i];
      ps[p] = scores[i] + g * scores_stride;
      po[p] = out[i] + g * HD;
    }
  for (int t0 = 0; t0 < n_pos; t0 += R)
    for (int p0 = 0; p0 < pairs; p0 += PB) {
      fbatch sums[W];
      MOE_UNROLL for (int b = 0; b < PB; ++b) {
        const int p = p0 + b;
        const float* qh = pq[p < pairs ? p : 0];
        const T* rows = pk[p < pairs ? p : 0] + static_cast<long>(t0) * HD;
        MOE_UNROLL for (int r = 0; r < R; ++r) {
          if (p >= pairs || t0 + r >= n_pos) {
            sums[b * R + r] = fbatch(0.f);
            continue;
          }
          const T* row = rows + r * HD;
          fbatch acc = load(row) * load(qh);
          MOE_UNROLL for (int s = 1; s < S; ++s) acc = xsimd::fma(load(row + s * W), load(qh + s * W), acc);
          sums[b * R + r] = acc;
        }
      }
      alignas(64) float lanes[W];
      (hadd_rows(sums) * fbatch(scale)).store_aligned(lanes);
      for (int b = 0; b < PB && p0 + b < pairs; ++b) {
        float* sc = ps[p0 + b] + t0;
        for (int r = 0; r < R && t0 + r < n_pos; ++r) sc[r] = lanes[b * R + r];
      }
    }

  const int chained = whole(n_pos, C);
  float inv_sum[kAttentionPairs];  // softmax's division, applied to out
  for (int p = 0; p < pairs; ++p) inv_sum[p] = 1.f / exp_shifted(Simd{}, ps[p], n_pos);
  // Each (head, slice pass)'s accumulators between turns: a turn takes every slice of its
  // rows while they are in L1 (a head of 16 vectors has 4 passes of 4 slices).
  constexpr int SP = S / G;
  fbatch carry[kAttentionPairs][SP][C][G];
  for (int p = 0; p < pairs; ++p)
    for (int sp = 0; sp < SP; ++sp)
      MOE_UNROLL for (int c = 0; c < C; ++c) MOE_UNROLL for (int k = 0; k < G; ++k) carry[p][sp][c][k] = fbatch(0.f);
  for (int t0 = 0; t0 < chained; t0 += RV) {
    const int t1 = t0 + RV < chained ? t0 + RV : chained;
    for (int p = 0; p < pairs; ++p) {
      const float* sc = ps[p];
      for (int sp = 0; sp < SP; ++sp) {
        const T* v = pv[p] + sp * G * W;
        fbatch acc[C][G];
        MOE_UNROLL for (int c = 0; c < C; ++c) MOE_UNROLL for (int k = 0; k < G; ++k) acc[c][k] = carry[p][sp][c][k];
        value_chains<HD>(acc, sc, v, t0, t1);
        MOE_UNROLL for (int c = 0; c < C; ++c) MOE_UNROLL for (int k = 0; k < G; ++k) carry[p][sp][c][k] = acc[c][k];
      }
    }
  }
  for (int p = 0; p < pairs; ++p)  // the positions past the chains, then out
    for (int sp = 0; sp < SP; ++sp)
      value_chains_finish<HD>(carry[p][sp], ps[p], pv[p] + sp * G * W, chained, n_pos, inv_sum[p], po[p] + sp * G * W);
}
// Prefill: the (token, query head) pairs of two or more tokens (attention_chunk's
// layout), a pair in each lane, W pairs at a time, as matrix-matrix work. The scores: the
// pairs' queries turned into lanes once a pass (`qt`: element d of every pair), each
// multiplied by a key's element d broadcast, U positions at a time, in two chains a
// position (even and odd d); they wait in `scores` as a row of W lanes a position, so the
// softmax runs across lanes, a pair's positions past its own token set to -inf (weight
// 0). The weighted sum: each value row loaded once for P pairs, SG slices of out a pass;
// a pair's positions past the pass's first token, pair by pair. A pair's arithmetic is
// its own: the same bits whatever the pairs beside it (a worker's heads, the tokens of
// its pass), though not decode's (attention_group_whole sums in another order).
// kernel_ab.sh's "chunk-attention" rows measure it.
#if defined(__AVX512F__) || defined(__aarch64__)
inline constexpr int kAttentionRegisters = 32;
#else
inline constexpr int kAttentionRegisters = 16;  // AVX2, armv7 NEON
#endif
inline constexpr int kAttentionLanePositions = kAttentionRegisters == 16 ? 6 : 8;  // U: 2U sums beside a q element
// P: the most pairs (a power of two, at most W) whose s accumulators and a value row of s
// vectors fit the registers.
constexpr int attention_value_pairs(int s) {
  int p = 1;
  while (2 * p * s + s + 2 <= kAttentionRegisters && 2 * p <= W) p *= 2;
  return p;
}
template <int S, class T>
[[gnu::always_inline]] inline void attention_lanes_whole(const float* q, long q_stride, int tokens, int group,
                                                         const T* keys, const T* values, int n_pos, float scale,
                                                         float* scores, float* out, long out_stride, bool ahead) {
  constexpr int HD = S * W, U = kAttentionLanePositions;
  constexpr int SG = S < kAttentionRegisters / 4 ? S : kAttentionRegisters / 4;  // slices of out a pass
  constexpr int P = attention_value_pairs(SG);
  constexpr int kBlock = kAttentionBlockBytes / (HD * static_cast<int>(sizeof(T)));
  constexpr int B = kBlock > 16 ? kBlock : 16;  // positions of values a block
  const int pairs = tokens * group, last = n_pos + tokens - 1;
  const long row_bytes = HD * static_cast<long>(sizeof(T));
  const auto* key_bytes = reinterpret_cast<const char*>(keys);
  const auto* value_bytes = reinterpret_cast<const char*>(values);
  const long kv_bytes = last * row_bytes;
  constexpr float kMinusInf = -std::numeric_limits<float>::infinity();
  for (int p0 = 0; p0 < pairs; p0 += W) {
    const int lanes = pairs - p0 < W ? pairs - p0 : W;
    alignas(64) float qt[HD][W];  // qt[d]: element d of each lane's query
    for (int j = 0; j < W; ++j) {
      const int p = p0 + j;
      const float* qp = q + (p / group) * q_stride + static_cast<long>(p % group) * HD;
      for (int d = 0; d < HD; ++d) qt[d][j] = j < lanes ? qp[d] : 0.f;
    }
    if (ahead && kv_bytes > kAttentionAheadBytes)
      for (long b = 0; b < kAttentionAheadBytes; b += 64) __builtin_prefetch(key_bytes + b);
    // Scores, position t's lanes at scores + t * W.
    const auto lane_scores = [&]<int N>(std::integral_constant<int, N>, int t) {
      alignas(64) float widened[std::is_same_v<T, float> ? 1 : N][HD];  // f16 keys as floats
      const float* row[N];
      MOE_UNROLL for (int u = 0; u < N; ++u) {
        if constexpr (std::is_same_v<T, float>) {
          row[u] = keys + static_cast<long>(t + u) * HD;
        } else {
          MOE_UNROLL for (int s = 0; s < S; ++s) load(keys + static_cast<long>(t + u) * HD + s * W)
              .store_aligned(widened[u] + s * W);
          row[u] = widened[u];
        }
      }
      if (ahead)
        for (long b = 0; b < N * row_bytes; b += 64)
          if (t * row_bytes + kAttentionAheadBytes + b < kv_bytes)
            __builtin_prefetch(key_bytes + t * row_bytes + kAttentionAheadBytes + b);
      fbatch acc[2][N];  // even and odd elements: two chains a position
      MOE_UNROLL for (int c = 0; c < 2; ++c) MOE_UNROLL for (int u = 0; u < N; ++u) acc[c][u] = fbatch(0.f);
      for (int d = 0; d < HD; d += 2) MOE_UNROLL for (int c = 0; c < 2; ++c) {
          const fbatch element = fbatch::load_aligned(qt[d + c]);
          MOE_UNROLL for (int u = 0; u < N; ++u) acc[c][u] = xsimd::fma(element, fbatch(row[u][d + c]), acc[c][u]);
        }
      MOE_UNROLL for (int u = 0; u < N; ++u)((acc[0][u] + acc[1][u]) * fbatch(scale))
          .store_unaligned(scores + (t + u) * W);
    };
    int t = 0;
    for (; t + U <= last; t += U) lane_scores(std::integral_constant<int, U>{}, t);
    for (; t < last; ++t) lane_scores(std::integral_constant<int, 1>{}, t);
    // The chunk's own positions past a pair's token are not its to see.
    for (int t = n_pos; t < last; ++t)
      for (int j = 0; j < lanes; ++j)
        if (t >= n_pos + (p0 + j) / group) scores[static_cast<long>(t) * W + j] = kMinusInf;
    // Softmax across lanes, left unnormalised; its division scales out.
    fbatch vmax(kMinusInf), vsum(0.f);
    for (int t = 0; t < last; ++t) vmax = xsimd::max(vmax, load(scores + t * W));
    for (int t = 0; t < last; ++t) {
      const fbatch e = xsimd::exp(load(scores + t * W) - vmax);
      e.store_unaligned(scores + t * W);
      vsum += e;
    }
    alignas(64) float inv_sum[W];
    (fbatch(1.f) / vsum).store_aligned(inv_sum);
    // The weighted sums: positions [0, n_pos) for P pairs at once, block by block (each
    // pair's S sums carried between blocks), then each pair's own last positions.
    fbatch carry[kAttentionPairs][S];
    for (int j = 0; j < lanes; ++j) MOE_UNROLL for (int s = 0; s < S; ++s) carry[j][s] = fbatch(0.f);
    const auto sum_one = [&](int j, int t0, int t1) {  // lane j's sums over positions [t0, t1)
      fbatch acc[S];
      MOE_UNROLL for (int s = 0; s < S; ++s) acc[s] = carry[j][s];
      for (int t = t0; t < t1; ++t) {
        const fbatch w(scores[static_cast<long>(t) * W + j]);
        MOE_UNROLL for (int s = 0; s < S; ++s) acc[s] =
            xsimd::fma(w, load(values + static_cast<long>(t) * HD + s * W), acc[s]);
      }
      MOE_UNROLL for (int s = 0; s < S; ++s) carry[j][s] = acc[s];
    };
    for (int b0 = 0; b0 < n_pos; b0 += B) {
      const int b1 = b0 + B < n_pos ? b0 + B : n_pos;
      for (long b = b0 * row_bytes + kAttentionAheadBytes;
           ahead && b < b1 * row_bytes + kAttentionAheadBytes && b < kv_bytes; b += 64)
        __builtin_prefetch(value_bytes + b);
      for (int j0 = 0; j0 < lanes; j0 += P) {
        if (lanes - j0 < P) {
          for (int j = j0; j < lanes; ++j) sum_one(j, b0, b1);
          break;
        }
        for (int s0 = 0; s0 < S; s0 += SG) {
          fbatch acc[P][SG];
          MOE_UNROLL for (int k = 0; k < P; ++k) MOE_UNROLL for (int s = 0; s < SG; ++s) acc[k][s] =
              carry[j0 + k][s0 + s];
          for (int t = b0; t < b1; ++t) {
            fbatch v[SG];
            MOE_UNROLL for (int s = 0; s < SG; ++s) {
              v[s] = load(values + static_cast<long>(t) * HD + (s0 + s) * W);
              if constexpr (P > 1) in_register(v[s]);  // loaded once for the P pairs
            }
            MOE_UNROLL for (int k = 0; k < P; ++k) {
              const fbatch w(scores[static_cast<long>(t) * W + j0 + k]);
              MOE_UNROLL for (int s = 0; s < SG; ++s) acc[k][s] = xsimd::fma(w, v[s], acc[k][s]);
            }
          }
          MOE_UNROLL for (int k = 0; k < P; ++k) MOE_UNROLL for (int s = 0; s < SG; ++s) carry[j0 + k][s0 + s] =
              acc[k][s];
        }
      }
    }
    for (int j = 0; j < lanes; ++j) {
      const int p = p0 + j;
      sum_one(j, n_pos, n_pos + p / group);
      float* o = out + (p / group) * out_stride + static_cast<long>(p % group) * HD;
      MOE_UNROLL for (int s = 0; s < S; ++s)(carry[j][s] * fbatch(inv_sum[j])).store_unaligned(o + s * W);
    }
  }
}
// Runs kernel(std::integral_constant<int, S>) for heads of S whole vectors: 1, 2, 4 or 8,
// and 16 and 32 where vectors are narrow; false (nothing run) for other heads.
template <class Kernel>
inline bool with_whole_vectors(int S, Kernel&& kernel) {
  const auto run = [&]<int V>(std::integral_constant<int, V> v) {
    if (S == V) kernel(v);
    return S == V;
  };
  bool ran = run(std::integral_constant<int, 1>{}) || run(std::integral_constant<int, 2>{}) ||
             run(std::integral_constant<int, 4>{}) || run(std::integral_constant<int, 8>{});
  if constexpr (W <= 8) ran = ran || run(std::integral_constant<int, 16>{});
  if constexpr (W == 4) ran = ran || run(std::integral_constant<int, 32>{});
  return ran;
}
}  // namespace simd

// Decode (one token): its group in passes of up to kAttentionPairs heads
// (attention_group_whole). Prefill (two tokens or more): the pairs in lanes, as many
// tokens a pass as fill kAttentionPairs with the group (attention_lanes_whole), which
// also takes heads of 16 vectors (128-wide on AVX2, 64-wide on NEON) and of 32 (128-wide
// on NEON); larger groups, and a pass's lone token, as decode. Only the first pass is
// from memory: the later ones find the cache where it left it.
template <class T>
inline void attention_chunk(Simd, const float* q, long q_stride, int tokens, int group, const T* keys, const T* values,
                            int n_pos, int head_dim, float scale, float* scores, long scores_stride, float* out,
                            long out_stride, bool from_memory = true) {
  using simd::W;
  const int S = head_dim % W == 0 ? head_dim / W : 0;  // vectors a head; 0: not whole vectors
  const auto whole_vectors = [&](auto kernel) { return simd::with_whole_vectors(S, kernel); };
  // Token i's heads [g0, g0 + heads): decode's kernel for heads of up to 8 vectors, else
  // the reference's loops over SIMD dot, softmax and axpy.
  const auto one_token = [&](int i, int g0, int heads, bool ahead) {
    const float* qi = q + i * q_stride + static_cast<long>(g0) * head_dim;
    float* oi = out + i * out_stride + static_cast<long>(g0) * head_dim;
    if (S <= 8 && whole_vectors([&]<int V>(std::integral_constant<int, V>) {
          if constexpr (V <= 8)
            simd::attention_group_whole<V>(qi, heads, keys, values, n_pos + i, scale, scores, scores_stride, oi, ahead);
        }))
      return;
    for (int g = 0; g < heads; ++g)
      attention<Simd, T>(Simd{}, qi + static_cast<long>(g) * head_dim, keys, values, n_pos + i, head_dim, scale,
                         scores + static_cast<long>(g) * scores_stride, oi + static_cast<long>(g) * head_dim);
  };
  if (tokens >= 2 && group <= kAttentionPairs / 2) {
    const int per_pass = kAttentionPairs / group;
    for (int i0 = 0; i0 < tokens; i0 += per_pass) {
      const int n = tokens - i0 < per_pass ? tokens - i0 : per_pass;
      const bool ahead = from_memory && i0 == 0;
      if (n >= 2 && whole_vectors([&]<int V>(std::integral_constant<int, V>) {
            simd::attention_lanes_whole<V>(q + i0 * q_stride, q_stride, n, group, keys, values, n_pos + i0, scale,
                                           scores, out + i0 * out_stride, out_stride, ahead);
          }))
        continue;
      for (int i = i0; i < i0 + n; ++i) one_token(i, 0, group, ahead && i == i0);  // a lone token, other heads
    }
    return;
  }
  for (int i = 0; i < tokens; ++i)
    for (int g0 = 0; g0 < group; g0 += kAttentionPairs)
      one_token(i, g0, group - g0 < kAttentionPairs ? group - g0 : kAttentionPairs, from_memory && i == 0);
}

// Decode (one token) over `heads` kv heads (attention_kv_heads' layout): with AVX2,
// kAttentionKvHeads of them at once where their query heads fit a pass
// (attention_kv_heads_whole); else, or for heads not of whole vectors, attention_chunk
// a kv head at a time, asking for the cache ahead.
template <class T>
inline void attention_kv_heads(Simd, int heads, int group, const float* q, const T* keys, const T* values,
                               long kv_stride, int n_pos, int head_dim, float scale, float* scores, long scores_stride,
                               long kv_scores_stride, float* out) {
  using simd::W;
  const int S = head_dim % W == 0 ? head_dim / W : 0;
  const int together = std::max(1, std::min(kAttentionKvHeads, kAttentionPairs / group));
  for (int i0 = 0; i0 < heads; i0 += together) {
    const int K = std::min(together, heads - i0);
    // Heads wider than 8 vectors take it even alone, so that their bits do not depend on
    // the kv heads beside them (attention_chunk sums them in another order).
    if constexpr (kAttentionKvHeads > 1) {
      if (K * group <= kAttentionPairs && (K > 1 || S > 8)) {
        const float* qs[kAttentionKvHeads];
        const T *ks[kAttentionKvHeads], *vs[kAttentionKvHeads];
        float *ss[kAttentionKvHeads], *os[kAttentionKvHeads];
        for (int i = 0; i < K; ++i) {
          qs[i] = q + static_cast<long>(i0 + i) * group * head_dim;
          os[i] = out + static_cast<long>(i0 + i) * group * head_dim;
          ks[i] = keys + (i0 + i) * kv_stride;
          vs[i] = values + (i0 + i) * kv_stride;
          ss[i] = scores + (i0 + i) * kv_scores_stride;
        }
        if (simd::with_whole_vectors(S, [&]<int V>(std::integral_constant<int, V>) {
              simd::attention_kv_heads_whole<V>(K, group, qs, ks, vs, n_pos, scale, ss, scores_stride, os);
            }))
          continue;
      }
    }
    for (int i = i0; i < i0 + K; ++i)
      attention_chunk(Simd{}, q + static_cast<long>(i) * group * head_dim, 0, 1, group, keys + i * kv_stride,
                      values + i * kv_stride, n_pos, head_dim, scale, scores + i * kv_scores_stride, scores_stride,
                      out + static_cast<long>(i) * group * head_dim, 0);
  }
}

template <class T>
inline void attention(Simd, const float* q, const T* keys, const T* values, int n_pos, int head_dim, float scale,
                      float* scores, float* out) {
  attention_chunk(Simd{}, q, 0, 1, 1, keys, values, n_pos, head_dim, scale, scores, 0, out, 0);
}
#endif

}  // namespace moe::kernels
