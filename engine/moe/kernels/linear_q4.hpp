// y = W x with 4-bit weights (q4, tensor.hpp) and int8 activations. The activations of
// a q4 product are quantized over the weights' own blocks (x ~ q * s, s = max|x| / 127
// over the block's 32 columns, as for int8 weights but with q4's block membership), so
// a weight block and an activation block meet in one exact integer sum: the nibbles
// (0..15) multiply q as they are, and the 8 they are offset by comes off as -8 * sum(q),
// a per-token number computed with the quantization (`sums`). The float work is one
// multiply-add per block: by (weight scale x activation scale).
//
// Here: the quantizer and the scalar reference, and the dispatch; each instruction set
// has its own file: linear_q4_x86.hpp (AVX2, AVX-VNNI, AVX-512 VNNI), linear_q4_neon.hpp
// (ARMv8.2 dotprod). Targets without integer dot products multiply q4 weights by f32
// activations (dot_q4, linear.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "moe/kernels/linear_q8.hpp"
#include "moe/tensor.hpp"

namespace moe::kernels {

// x [n, cols] -> q [n, cols] (int8, column order), scales [n, cols/32] and sums
// [n, cols/32] (-8 * the block's sum of q), both in block order: group by group, block j
// of a group at 16 * group + j.
inline void quantize_activations_q4(Scalar, const float* x, int n, int cols, int8_t* q, float* scales, int32_t* sums) {
  const int blocks = cols / kQ4Block;
  for (int t = 0; t < n; ++t) {
    const float* xt = x + static_cast<long>(t) * cols;
    int8_t* qt = q + static_cast<long>(t) * cols;
    for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
      const int g = q4_group_blocks(blocks, gi), chunk = 4 * g, base = gi * kQ4GroupBlocks * kQ4Block;
      for (int j = 0; j < g; ++j) {
        float amax = 0.f;
        for (int k = 0; k < 8; ++k)
          for (int i = 0; i < 4; ++i) {
            const float a = std::fabs(xt[base + chunk * k + 4 * j + i]);
            amax = a > amax ? a : amax;  // a NaN is not kept (as fmax): check_logits reports it later
          }
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        int32_t sum = 0;
        for (int k = 0; k < 8; ++k)
          for (int i = 0; i < 4; ++i) {
            const int c = base + chunk * k + 4 * j + i;
            qt[c] = static_cast<int8_t>(std::nearbyint(xt[c] * inv));
            sum += qt[c];
          }
        scales[static_cast<long>(t) * blocks + gi * kQ4GroupBlocks + j] = amax / 127.f;
        sums[static_cast<long>(t) * blocks + gi * kQ4GroupBlocks + j] = -8 * sum;
      }
    }
  }
}

// The quantized activations of a q4 product (quantize_activations_q4's outputs).
struct ActQ4 {
  const int8_t* q;
  const float* scales;
  const int32_t* sums;
};

// One group of g blocks against one token: q, xs and sums point at the group's first
// column and block.
inline float group_dot_q4(Scalar, const uint8_t* group, int g, const int8_t* q, const float* xs, const int32_t* sums) {
  const int chunk = 4 * g;
  const uint8_t* nibbles = group + 2 * g;
  float total = 0.f;
  for (int j = 0; j < g; ++j) {
    int32_t isum = sums[j];
    for (int k = 0; k < 8; ++k)
      for (int i = 0; i < 4; ++i) {
        const uint8_t byte = nibbles[chunk * (k / 2) + 4 * j + i];
        isum += (k % 2 ? byte >> 4 : byte & 15) * static_cast<int32_t>(q[chunk * k + 4 * j + i]);
      }
    const float ws = half_to_float(static_cast<uint16_t>(group[2 * j] | group[2 * j + 1] << 8));
    total += static_cast<float>(isum) * (ws * xs[j]);
  }
  return total;
}

// One row against one token: its groups' sums.
inline float row_dot_q4(Scalar, const uint8_t* row, int cols, const int8_t* q, const float* xs, const int32_t* sums) {
  const int blocks = cols / kQ4Block;
  float total = 0.f;
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi), at = gi * kQ4GroupBlocks;
    total += group_dot_q4(Scalar{}, row, g, q + at * kQ4Block, xs + at, sums + at);
    row += g * kQ4BlockBytes;
  }
  return total;
}

// Rows [r0, r1) of y = W x for n_tokens tokens.
inline void linear_q4_rows(Scalar, const Matrix& m, const ActQ4& a, int n_tokens, float* y, int r0, int r1) {
  const int blocks = m.cols / kQ4Block;
  for (int r = r0; r < r1; ++r)
    for (int t = 0; t < n_tokens; ++t)
      y[static_cast<long>(t) * m.rows + r] =
          row_dot_q4(Scalar{}, m.q4_row(r), m.cols, a.q + static_cast<long>(t) * m.cols,
                     a.scales + static_cast<long>(t) * blocks, a.sums + static_cast<long>(t) * blocks);
}

}  // namespace moe::kernels

#if MOE_SIMD && defined(__ARM_FEATURE_DOTPROD)
#include "moe/kernels/linear_q4_neon.hpp"
#elif MOE_Q8_X86
#include "moe/kernels/linear_q4_x86.hpp"
#endif

namespace moe::kernels {

#if MOE_SIMD
// The same bytes as the scalar quantizer (one multiply by 127 / max, round half to even);
// on x86 a group's step takes 16 blocks (AVX-512) or 8 (AVX2) per instruction, on ARM
// dotprod a block is 8 vectors of 4.
inline void quantize_activations_q4(Simd, const float* x, int n, int cols, int8_t* q, float* scales, int32_t* sums) {
#if defined(MOE_Q4_SIMD_QUANTIZER)  // set by the ISA header that has quantize_group_q4
  const int blocks = cols / kQ4Block;
  for (int t = 0; t < n; ++t)
    for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
      const long at = static_cast<long>(t) * blocks + gi * kQ4GroupBlocks;
      const long c = static_cast<long>(t) * cols + gi * kQ4GroupBlocks * kQ4Block;
      simd::quantize_group_q4(x + c, q4_group_blocks(blocks, gi), q + c, scales + at, sums + at);
    }
#else
  quantize_activations_q4(Scalar{}, x, n, cols, q, scales, sums);
#endif
}
#endif

#if MOE_SIMD && (defined(__ARM_FEATURE_DOTPROD) || MOE_Q8_X86)
namespace detail {
// Rows [r0, r0 + W) for tokens [t, t + NT): tiles of R rows, then one hadd_rows per
// token.
template <int NT, int R = simd::q4_tile_rows(NT)>
[[gnu::always_inline]] inline void linear_q4_tiles(const Matrix& m, const ActQ4& a, int r0, int t, float* y) {
  using simd::W;
  static_assert(W % R == 0, "a tile's rows divide W");
  const long blocks = m.cols / kQ4Block;
  simd::fbatch lanes[NT][W];
  for (int i = 0; i < W; i += R) {
    const uint8_t* rows[R];
    MOE_UNROLL for (int j = 0; j < R; ++j) rows[j] = m.q4_row(r0 + i + j);
    simd::tile_q4<R, NT>(rows, m.cols, a.q + t * m.cols, a.scales + t * blocks, a.sums + t * blocks, &lanes[0][i], W);
  }
  MOE_UNROLL for (int k = 0; k < NT; ++k) simd::hadd_rows(lanes[k]).store_unaligned(
      y + static_cast<long>(t + k) * m.rows + r0);
}

// Decode's own tile over S streams (stream_blocks): block i of each stream at once, one
// row from each stream in the tile, then one hadd_rows per block. For an ISA whose
// kQ4DecodeStreams > 1; its tile_q4 takes kSpread.
template <int S>
[[gnu::always_inline]] inline void linear_q4_decode_streams(const Matrix& m, const ActQ4& a, const int* first_rows,
                                                            float* y) {
  using simd::W;
  simd::fbatch lanes[S][W];
  for (int i = 0; i < W; ++i) {
    const uint8_t* rows[S];
    MOE_UNROLL for (int s = 0; s < S; ++s) rows[s] = m.q4_row(first_rows[s] + i);
    simd::fbatch out[S];
    simd::tile_q4<S, 1, true>(rows, m.cols, a.q, a.scales, a.sums, out, 1);
    MOE_UNROLL for (int s = 0; s < S; ++s) lanes[s][i] = out[s];
  }
  MOE_UNROLL for (int s = 0; s < S; ++s) simd::hadd_rows(lanes[s]).store_unaligned(y + first_rows[s]);
}
}  // namespace detail
#endif

// W rows at a time: on x86, kQ4TurnedFrom tokens or more in turned tiles; otherwise the
// tokens kQ4Tokens at a time while the rows are in L1, then one by one; rows past the
// last whole W one tile of one row each.
template <class K>
inline void linear_q4(K, const Matrix& m, const ActQ4& a, int n_tokens, float* y, int r0, int r1) {
#if MOE_SIMD && (defined(__ARM_FEATURE_DOTPROD) || MOE_Q8_X86)
  if constexpr (std::is_same_v<K, Simd>) {
    using simd::W;
    constexpr int NT = simd::kQ4Tokens;
    const long blocks = m.cols / kQ4Block;
    const long w_bytes = static_cast<long>(W) * blocks * kQ4BlockBytes;
#if MOE_Q8_X86
    if (n_tokens >= simd::kQ4TurnedFrom) {  // prefill: turned tiles, kQ4TurnedTiles at once while the rows last
      const auto rows_tokens = [&]<int T>(std::integral_constant<int, T>) {
        for (int t0 = 0; t0 < n_tokens; t0 += simd::kQ4TurnedTokens)
          simd::q4_rows_tokens<T>(m, a, r0, t0,
                                  n_tokens - t0 < simd::kQ4TurnedTokens ? n_tokens : t0 + simd::kQ4TurnedTokens, y);
      };
      constexpr int T = simd::kQ4TurnedTiles;
      if constexpr (T > 1)
        for (; r0 + T * W <= r1; r0 += T * W) rows_tokens(std::integral_constant<int, T>{});
      for (; r0 + W <= r1; r0 += W) rows_tokens(std::integral_constant<int, 1>{});
    }
#endif
    // Row-wise tiles (decode, and prefill below kQ4TurnedFrom tokens): the hardware
    // prefetcher alone left bandwidth unused. Unless the ISA's own decode tile spreads
    // its prefetches over its loads (kQ4SpreadBytes), each row block asks for the bytes
    // kQ4PrefetchBytes past its start (a distance in bytes, not in blocks: blocks of long
    // rows put it beyond L1), never past the range (another thread's rows, or another
    // tensor). Either way the range's first bytes are asked for at once.
    constexpr bool has_own_decode = simd::kQ4DecodeRows != simd::q4_tile_rows(1);
    const bool own_decode = has_own_decode && n_tokens == 1 && m.cols >= simd::kQ4DecodeRowsFromCols;
    const bool burst = !own_decode;
    const uint8_t* const end = m.q4_row(r1);
    const auto prefetch_rows = [&](const uint8_t* from, long bytes) {
      for (long b = 0; b < std::min(bytes, static_cast<long>(end - from)); b += 64) simd::prefetch(from + b);
    };
    constexpr long ahead = simd::kQ4PrefetchBytes;
    // Decode as streams: each stream's first kQ4StreamStartBytes asked for at once.
    if constexpr (has_own_decode && simd::kQ4DecodeStreams > 1)
      if (own_decode && m.cols >= simd::kQ4DecodeStreamsFromCols) {
        const int whole_end = r0 + simd::whole(r1 - r0, W);  // rows past it: the loops below
        const int part = (whole_end - r0) / W / simd::kQ4DecodeStreams * W;
        for (int s = 0; s < simd::kQ4DecodeStreams; ++s)
          prefetch_rows(m.q4_row(r0 + s * part), simd::kQ4StreamStartBytes);
        simd::stream_blocks<simd::kQ4DecodeStreams>(r0, whole_end, [&](auto streams, const int* first_rows) {
          detail::linear_q4_decode_streams<decltype(streams)::value>(m, a, first_rows, y);
        });
        r0 = whole_end;
      }
    prefetch_rows(m.q4_row(r0), burst ? ahead : simd::kQ4SpreadBytes);
    for (; r0 + W <= r1; r0 += W) {
      if (burst) prefetch_rows(m.q4_row(r0) + ahead, w_bytes);
      int t = 0;
      for (; t + NT <= n_tokens; t += NT) detail::linear_q4_tiles<NT>(m, a, r0, t, y);
      if constexpr (NT > 2)
        for (; t + 2 <= n_tokens; t += 2) detail::linear_q4_tiles<2>(m, a, r0, t, y);
      if constexpr (has_own_decode)
        if (own_decode) {
          detail::linear_q4_tiles<1, simd::kQ4DecodeRows>(m, a, r0, 0, y);
          continue;
        }
      for (; t < n_tokens; ++t) detail::linear_q4_tiles<1>(m, a, r0, t, y);
    }
    for (; r0 < r1; ++r0) {
      const uint8_t* row = m.q4_row(r0);
      for (int t = 0; t < n_tokens; ++t) {
        simd::fbatch lanes;
        simd::tile_q4<1, 1>(&row, m.cols, a.q + t * m.cols, a.scales + t * blocks, a.sums + t * blocks, &lanes, 1);
        y[static_cast<long>(t) * m.rows + r0] = xsimd::hadd(lanes);
      }
    }
    return;
  }
#endif
  linear_q4_rows(Scalar{}, m, a, n_tokens, y, r0, r1);
}

template <class K>
inline void linear_q4(K k, const Matrix& m, const ActQ4& a, int n_tokens, float* y) {
  linear_q4(k, m, a, n_tokens, y, 0, m.rows);
}

}  // namespace moe::kernels
