// y = W x with int8 weights AND int8 activations: the integer dot products of ARMv8.2
// (vdotq_s32), x86 AVX-512 VNNI / AVX-VNNI (vpdpbusd) and AVX2 (vpmaddubsw).
// Activations are quantized per block of 32 columns (x ~ q * s, s = max|x| / 127, as
// llama.cpp's Q8_0), so a block's sum is an exact int32 and the float work is one
// multiply-add per block.
//
// A matrix is eligible when its columns are whole blocks and its weight groups hold
// whole blocks (one scale per row, or groups that are multiples of 32). On ARM the
// scalar reference and the SIMD kernel do the same float operations in the same order,
// so they agree bit for bit; the x86 kernel keeps 8 lanes per block in float (and with
// AVX-512 takes an offset off at the end: offset_weights), so it agrees to rounding (the
// integer parts are exact everywhere).
//
// Used when the target has integer dot products (compile time: kInt8Dot); elsewhere
// int8 weights are widened to f32 against f32 activations (linear.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "moe/kernels/backend.hpp"
#include "moe/tensor.hpp"

namespace moe::kernels {

inline constexpr int kActBlock = 32;

#if MOE_SIMD && (defined(__ARM_FEATURE_DOTPROD) || defined(__AVX2__))
inline constexpr bool kInt8Dot = true;
#else
inline constexpr bool kInt8Dot = false;
#endif

inline bool q8_eligible(const Matrix& m) {
  return m.dtype == DType::i8 && m.cols % kActBlock == 0 && (m.group_size == m.cols || m.group_size % kActBlock == 0);
}

// x [n, cols] -> q [n, cols] int8 and scales [n, cols/32]. Runs once per product (per
// input, where several matrices share one), not per weight.
inline void quantize_activations(Scalar, const float* x, int n, int cols, int8_t* q, float* scales) {
  const int blocks = cols / kActBlock;
  for (int t = 0; t < n; ++t)
    for (int b = 0; b < blocks; ++b) {
      const float* xb = x + static_cast<long>(t) * cols + b * kActBlock;
      int8_t* qb = q + static_cast<long>(t) * cols + b * kActBlock;
      float amax = 0.f;
      for (int i = 0; i < kActBlock; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
      const float s = amax / 127.f;
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      for (int i = 0; i < kActBlock; ++i) qb[i] = static_cast<int8_t>(std::nearbyint(xb[i] * inv));
      scales[t * blocks + b] = s;
    }
}

#if MOE_SIMD
// The same operations (one multiply, round half to even), so the same bytes; with 64
// columns per matrix the scalar loop cost as much as the product it fed.
inline void quantize_activations(Simd, const float* x, int n, int cols, int8_t* q, float* scales) {
#if defined(__AVX512F__)
  const int blocks = cols / kActBlock;
  for (int t = 0; t < n; ++t)
    for (int b = 0; b < blocks; ++b) {
      const long at = static_cast<long>(t) * cols + b * kActBlock;
      const __m512 lo = _mm512_loadu_ps(x + at), hi = _mm512_loadu_ps(x + at + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
      const __m512 inv = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + at), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(lo, inv))));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + at + 16), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(hi, inv))));
      scales[t * blocks + b] = amax / 127.f;
    }
#else
  quantize_activations(Scalar{}, x, n, cols, q, scales);
#endif
}
#endif

// Sum over one block of 32 int8 products (exact).
inline int32_t block_dot_q8(Scalar, const int8_t* w, const int8_t* x) {
  int32_t s = 0;
  for (int i = 0; i < kActBlock; ++i) s += static_cast<int32_t>(w[i]) * static_cast<int32_t>(x[i]);
  return s;
}

#if MOE_SIMD && defined(__ARM_FEATURE_DOTPROD)
inline int32_t block_dot_q8(Simd, const int8_t* w, const int8_t* x) {
  int32x4_t acc = vdotq_s32(vdupq_n_s32(0), vld1q_s8(w), vld1q_s8(x));
  acc = vdotq_s32(acc, vld1q_s8(w + 16), vld1q_s8(x + 16));
  return vaddvq_s32(acc);
}
#elif MOE_SIMD && defined(__AVX2__)
namespace simd {
// The 32 products of one block, summed in pairs of 4 into 8 int32 lanes. The x86
// instructions multiply unsigned by signed bytes, so |w| meets x with w's sign moved
// onto it: exact, since |x| <= 127 (quantize_activations) and |w| <= 128 keep even
// vpmaddubsw's int16 pair sums in range (2 * 128 * 127 = 32512).
inline __m256i block_lanes_q8(const int8_t* w, const int8_t* x) {
  const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  const __m256i u = _mm256_abs_epi8(wv), s = _mm256_sign_epi8(xv, wv);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
// AVX-512 takes w + 128 instead of moving w's sign onto x: flipping the top bit makes w
// an unsigned byte, one instruction instead of block_lanes_q8's three per chunk and
// token. Each lane then holds its dot product plus 128 * (its four x), exact in int32;
// that offset depends on x alone, so once scaled it is one number per token and product
// (row_offset_q8), taken from each row's sum at the end: the kernel 0.95-1.31x in cache,
// the most on the largest matrices (bench/README.md).
inline __m512i offset_weights(const int8_t* w) { return _mm512_xor_si512(_mm512_loadu_si512(w), _mm512_set1_epi8(-128)); }

// The 16 int32 lanes of one 64-column chunk, 128 * x included: two blocks at once.
inline __m512i chunk_lanes_q8(const int8_t* w, __m512i x) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset_weights(w), x); }

// Scales for a 64-column chunk: block c/32's in the low 8 lanes, the next block's above.
inline __m512 chunk_scales(const float* s) { return _mm512_insertf32x8(_mm512_set1_ps(s[0]), _mm256_set1_ps(s[1]), 1); }

// What offset_weights adds to the scaled sum of every row of a product over one token's
// activations: 128 * x over the whole 64-column chunks, scaled as the rows' chunks are.
inline float row_offset_q8(const int8_t* x, const float* xs, int cols) {
  __m512 k = _mm512_setzero_ps();
  for (int c = 0; c < whole(cols, 64); c += 64)
    k = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(-128), _mm512_loadu_si512(x + c))),
                        chunk_scales(xs + c / 32), k);
  return _mm512_reduce_add_ps(k);
}
#else
inline float row_offset_q8(const int8_t*, const float*, int) { return 0.f; }  // AVX2: w's sign moves onto x, no offset
#endif

// R rows against one token's activations, per-row weight scales not applied: for each
// row, lanes whose sum is its dot product plus row_offset_q8. Blocks stay in their own
// lanes until scaled by their activation scale, two blocks per AVX-512 vector. Each row
// gets the same operations in the same order whatever R is.
template <int R>
[[gnu::always_inline]] inline void row_dots_q8(const int8_t* const* w, const int8_t* x, const float* xs, int cols, fbatch* out) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
  static_assert(W == 16, "AVX-512 build expects 16 float lanes");
  __m512 acc0[R], acc1[R];  // two independent chains per row
  __m256 tail[R];
  MOE_UNROLL for (int r = 0; r < R; ++r) {
    acc0[r] = acc1[r] = _mm512_setzero_ps();
    tail[r] = _mm256_setzero_ps();
  }
  int c = 0;
  for (; c < whole(cols, 128); c += 128) {
    const __m512i x0 = _mm512_loadu_si512(x + c), x1 = _mm512_loadu_si512(x + c + 64);
    const __m512 s0 = chunk_scales(xs + c / 32), s1 = chunk_scales(xs + c / 32 + 2);
    MOE_UNROLL for (int r = 0; r < R; ++r) {
      acc0[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(chunk_lanes_q8(w[r] + c, x0)), s0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(chunk_lanes_q8(w[r] + c + 64, x1)), s1, acc1[r]);
    }
  }
  if (c + 64 <= cols) {  // a last whole chunk: offset like the others (row_offset_q8 counts it)
    const __m512i x0 = _mm512_loadu_si512(x + c);
    const __m512 s0 = chunk_scales(xs + c / 32);
    MOE_UNROLL for (int r = 0; r < R; ++r) acc0[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(chunk_lanes_q8(w[r] + c, x0)), s0, acc0[r]);
    c += 64;
  }
  for (; c < cols; c += 32)  // a lone block of 32: exact lanes, no offset
    MOE_UNROLL for (int r = 0; r < R; ++r)
      tail[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_lanes_q8(w[r] + c, x + c)), _mm256_set1_ps(xs[c / 32]), tail[r]);
  MOE_UNROLL for (int r = 0; r < R; ++r) out[r] = _mm512_add_ps(_mm512_add_ps(acc0[r], acc1[r]), _mm512_zextps256_ps512(tail[r]));
#else
  static_assert(W == 8, "AVX2 build expects 8 float lanes");
  __m256 acc0[R], acc1[R];
  MOE_UNROLL for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  int c = 0;
  for (; c < whole(cols, 64); c += 64) {
    const __m256 s0 = _mm256_set1_ps(xs[c / 32]), s1 = _mm256_set1_ps(xs[c / 32 + 1]);
    MOE_UNROLL for (int r = 0; r < R; ++r) {
      acc0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_lanes_q8(w[r] + c, x + c)), s0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_lanes_q8(w[r] + c + 32, x + c + 32)), s1, acc1[r]);
    }
  }
  if (c < cols)
    MOE_UNROLL for (int r = 0; r < R; ++r) acc0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_lanes_q8(w[r] + c, x + c)), _mm256_set1_ps(xs[c / 32]), acc0[r]);
  MOE_UNROLL for (int r = 0; r < R; ++r) out[r] = _mm256_add_ps(acc0[r], acc1[r]);
#endif
}

// Decode: the W rows of each of R blocks, finished by one haddp per block. `offset`:
// row_offset_q8 of this token.
template <int R>
inline void q8_one_token_blocks(const Matrix& m, const int8_t* xq, const float* xs, float offset, const int* block_rows, float* y) {
  fbatch sums[R][W];
  for (int j = 0; j < W; ++j) {
    const int8_t* rows[R];
    fbatch out[R];
    for (int b = 0; b < R; ++b) rows[b] = m.i8() + static_cast<long>(block_rows[b] + j) * m.cols;
    row_dots_q8<R>(rows, xq, xs, m.cols, out);
    for (int b = 0; b < R; ++b) sums[b][j] = out[b];
  }
  for (int b = 0; b < R; ++b)
    ((hadd_rows(sums[b]) - fbatch(offset)) * fbatch::load_unaligned(m.scales + block_rows[b])).store_unaligned(y + block_rows[b]);
}

// Decode, rows [r0, end) in whole blocks of W, as two memory streams (stream_blocks):
// four measured 0.83-1.02x of two on bench-m end to end, though 1.03-1.08x in
// kernel_ab.sh's heap buffers (bench/README.md).
inline void q8_one_token_streams(const Matrix& m, const int8_t* xq, const float* xs, int r0, int end, float* y) {
  const float offset = row_offset_q8(xq, xs, m.cols);
  stream_blocks<2>(r0, end, [&](auto blocks, const int* first_rows) { q8_one_token_blocks<decltype(blocks)::value>(m, xq, xs, offset, first_rows, y); });
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
// Prefill: one row against NT tokens, the row's bytes loaded and offset once for all NT
// (row_dots_q8's lanes, per token, row_offset_q8 included).
template <int NT>
inline void row_dot_q8_tokens(const int8_t* w, const int8_t* x, const float* xs, int cols, fbatch* out) {
  const int blocks = cols / 32;
  __m512 acc[NT];
  for (int k = 0; k < NT; ++k) acc[k] = _mm512_setzero_ps();
  int c = 0;
  for (; c < whole(cols, 64); c += 64) {
    const __m512i u = offset_weights(w + c);
    for (int k = 0; k < NT; ++k) {
      const __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512(x + static_cast<long>(k) * cols + c));
      acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), chunk_scales(xs + static_cast<long>(k) * blocks + c / 32), acc[k]);
    }
  }
  for (int k = 0; k < NT; ++k) {
    if (c < cols) {  // a lone block of 32
      const __m256 lanes = _mm256_cvtepi32_ps(block_lanes_q8(w + c, x + static_cast<long>(k) * cols + c));
      acc[k] = _mm512_add_ps(acc[k], _mm512_zextps256_ps512(_mm256_mul_ps(lanes, _mm256_set1_ps(xs[static_cast<long>(k) * blocks + c / 32]))));
    }
    out[k] = acc[k];
  }
}

// Rows [r, r + W) for tokens [t, t + NT) of y = W x, finished by one haddp per token;
// offsets[k]: row_offset_q8 of token t + k.
template <int NT>
inline void q8_token_group(const Matrix& m, const int8_t* xq, const float* xs, const float* offsets, int r, int t, const fbatch& row_scales,
                           float* y) {
  const int blocks = m.cols / 32;
  fbatch sums[NT][W], one_row[NT];
  for (int j = 0; j < W; ++j) {
    row_dot_q8_tokens<NT>(m.i8() + static_cast<long>(r + j) * m.cols, xq + static_cast<long>(t) * m.cols, xs + static_cast<long>(t) * blocks,
                          m.cols, one_row);
    for (int k = 0; k < NT; ++k) sums[k][j] = one_row[k];
  }
  for (int k = 0; k < NT; ++k)
    ((hadd_rows(sums[k]) - fbatch(offsets[k])) * row_scales).store_unaligned(y + static_cast<long>(t + k) * m.rows + r);
}
#endif
}  // namespace simd

inline int32_t block_dot_q8(Simd, const int8_t* w, const int8_t* x) { return simd::hsum(simd::block_lanes_q8(w, x)); }
#elif MOE_SIMD
// No integer dot products (kInt8Dot is false, so the engine never comes here): the
// reference, so that code written for either tag still compiles.
inline int32_t block_dot_q8(Simd, const int8_t* w, const int8_t* x) { return block_dot_q8(Scalar{}, w, x); }
#endif

// y[t][r] = sum over weight groups g of ws[r][g] * (sum over blocks b in g of
// isum(r, t, b) * xs[t][b]), for rows [r0, r1).
template <class K>
inline void linear_q8_rows(K k, const Matrix& m, const int8_t* xq, const float* xs, int n_tokens, float* y, int r0, int r1) {
  const int blocks = m.cols / kActBlock, per_group = m.group_size / kActBlock, groups = m.groups_per_row();
  for (int r = r0; r < r1; ++r) {
    const int8_t* wr = m.i8() + static_cast<long>(r) * m.cols;
    const float* ws = m.scales + static_cast<long>(r) * groups;
    for (int t = 0; t < n_tokens; ++t) {
      const int8_t* xt = xq + static_cast<long>(t) * m.cols;
      const float* st = xs + static_cast<long>(t) * blocks;
      float total = 0.f;
      for (int g = 0; g < groups; ++g) {
        float acc = 0.f;
        for (int b = g * per_group; b < (g + 1) * per_group; ++b)
          acc += static_cast<float>(block_dot_q8(k, wr + b * kActBlock, xt + b * kActBlock)) * st[b];
        total += acc * ws[g];
      }
      y[static_cast<long>(t) * m.rows + r] = total;
    }
  }
}

template <class K>
inline void linear_q8(K k, const Matrix& m, const int8_t* xq, const float* xs, int n_tokens, float* y, int r0, int r1) {
#if MOE_SIMD && defined(__AVX2__) && !defined(__ARM_FEATURE_DOTPROD)
  // x86, one scale per row (the converter's default): W rows at a time, their W sums
  // finished by one haddp. Decode reads the rows as two streams (stream_blocks);
  // prefill has each row block meet every token while it is in L1.
  if constexpr (std::is_same_v<K, Simd>) {
    if (m.group_size == m.cols) {
      using simd::fbatch, simd::W;
      const int blocks = m.cols / kActBlock, end = r0 + simd::whole(r1 - r0, W);
      if (n_tokens == 1) {
        simd::q8_one_token_streams(m, xq, xs, r0, end, y);
        return linear_q8_rows(k, m, xq, xs, n_tokens, y, end, r1);
      }
      // Prefill, up to 64 tokens at a time (the offsets' room): each row block meets
      // every token while it is in L1.
      constexpr int kTokens = 64;
      for (int t0 = 0; t0 < n_tokens; t0 += kTokens) {
        const int t1 = n_tokens - t0 < kTokens ? n_tokens : t0 + kTokens;
        float offsets[kTokens];
        for (int t = t0; t < t1; ++t) offsets[t - t0] = simd::row_offset_q8(xq + static_cast<long>(t) * m.cols, xs + static_cast<long>(t) * blocks, m.cols);
        for (int r = r0; r < end; r += W) {
          int t = t0;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
          const fbatch row_scales = fbatch::load_unaligned(m.scales + r);
          // Tokens in groups of 8, then 4 (an expert's share of a 16-token chunk is often
          // 2-6), sharing each row's loads; measured 1.25x (4) and 1.1x more (8).
          for (; t + 8 <= t1; t += 8) simd::q8_token_group<8>(m, xq, xs, offsets + (t - t0), r, t, row_scales, y);
          for (; t + 4 <= t1; t += 4) simd::q8_token_group<4>(m, xq, xs, offsets + (t - t0), r, t, row_scales, y);
#endif
          for (; t < t1; ++t)
            simd::q8_one_token_blocks<1>(m, xq + static_cast<long>(t) * m.cols, xs + static_cast<long>(t) * blocks, offsets[t - t0], &r,
                                         y + static_cast<long>(t) * m.rows);
        }
      }
      r0 = end;
    }
  }
#endif
  linear_q8_rows(k, m, xq, xs, n_tokens, y, r0, r1);
}

template <class K>
inline void linear_q8(K k, const Matrix& m, const int8_t* xq, const float* xs, int n_tokens, float* y) {
  linear_q8(k, m, xq, xs, n_tokens, y, 0, m.rows);
}

}  // namespace moe::kernels
