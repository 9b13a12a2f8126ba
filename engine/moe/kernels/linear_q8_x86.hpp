// int8 x int8 products on x86 (AVX2 and up): the parts both instruction sets share,
// and the row kernels of the one this build targets (linear_q8_avx512.hpp with AVX-512
// VNNI, else linear_q8_avx2.hpp). The x86 kernel keeps 8 lanes per block in float, so
// it agrees with the scalar reference to rounding (the integer parts are exact).
#pragma once

namespace moe::kernels::simd {

// acc + the products of u (unsigned) and s (signed) summed by 4 into 8 int32 lanes.
// Exact for the int8 operands here: |u| <= 128 and |s| <= 127 keep even vpmaddubsw's
// int16 pair sums in range (2 * 128 * 127 = 32512).
[[gnu::always_inline]] inline __m256i dot4_q8(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// The 32 products of one block, summed in pairs of 4 into 8 int32 lanes. The x86
// instructions multiply unsigned by signed bytes, so |w| meets x with w's sign moved
// onto it (|x| <= 127: quantize_activations).
inline __m256i block_lanes_q8(const int8_t* w, const int8_t* x) {
  const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return dot4_q8(_mm256_setzero_si256(), _mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
}

// Prefill tiles read 8 or 16 rows side by side, more streams than the hardware
// prefetcher follows: from memory their loads stalled the tile (bench/README.md, "Design
// decisions"). Each load prefetches the same bytes of the tile this many tiles ahead (the
// int8 and q4 turned tiles); past a matrix's end that is harmless.
inline constexpr int kQ8PrefetchTiles = 1;
// AVX-512's decode reads each row whole, in address order, but the hardware prefetcher
// alone left bandwidth unused there (bench/README.md, "Decode's spread prefetches"): each
// load also asks for the bytes this far on (the row's next ones, or the next rows').
// AVX2's decode asks for none (linear_q8_avx2.hpp).
inline constexpr long kQ8SpreadBytes = 4096;

inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

}  // namespace moe::kernels::simd

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
#include "moe/kernels/linear_q8_avx512.hpp"
#else
#include "moe/kernels/linear_q8_avx2.hpp"
#endif

namespace moe::kernels {

inline int32_t block_dot_q8(Simd, const int8_t* w, const int8_t* x) { return simd::hsum(simd::block_lanes_q8(w, x)); }

// Quantizing: the same operations as the scalar reference (one multiply, round half to
// even), so the same bytes; AVX-512F, VNNI or not, does 32 columns per step, AVX2 8.
inline void quantize_activations(Simd, const float* x, int n, int cols, int8_t* q, float* scales) {
#if defined(__AVX512F__)
  const int blocks = cols / kActBlock;
  for (int t = 0; t < n; ++t)
    for (int b = 0; b < blocks; ++b) {
      const long at = static_cast<long>(t) * cols + b * kActBlock;
      const __m512 lo = _mm512_loadu_ps(x + at), hi = _mm512_loadu_ps(x + at + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
      const __m512 inv = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + at),
                       _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(lo, inv))));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + at + 16),
                       _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(hi, inv))));
      scales[t * blocks + b] = amax / 127.f;
    }
#else  // AVX2: 8 columns a vector, the int32 results packed to bytes and put back in order
  const int blocks = cols / kActBlock;
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undoes the packs' 128-bit lanes
  for (int t = 0; t < n; ++t)
    for (int b = 0; b < blocks; ++b) {
      const long at = static_cast<long>(t) * cols + b * kActBlock;
      __m256 v[4], amax = _mm256_setzero_ps();
      // max(|x|, amax) keeps amax where x is NaN, as the reference's fmax does
      MOE_UNROLL for (int i = 0; i < 4; ++i) {
        v[i] = _mm256_loadu_ps(x + at + 8 * i);
        amax = _mm256_max_ps(_mm256_and_ps(v[i], magnitude), amax);
      }
      const float a = simd::hmax(simd::fbatch(amax));
      const __m256 inv = _mm256_set1_ps(a > 0.f ? 127.f / a : 0.f);
      __m256i r[4];
      MOE_UNROLL for (int i = 0; i < 4; ++i) r[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));  // half to even
      const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + at), _mm256_permutevar8x32_epi32(bytes, order));
      scales[t * blocks + b] = a / 127.f;
    }
#endif
}

namespace simd {

// Decode: the W rows of each of R blocks, finished by one haddp per block. `offset`:
// row_offset_q8 of this token. kSpread: each load also prefetches kQ8SpreadBytes on
// (decode's streams; prefill's rows are in L1).
template <int R, bool kSpread = false>
inline void q8_one_token_blocks(const Matrix& m, const int8_t* xq, const float* xs, float offset, const int* block_rows,
                                float* y) {
  fbatch sums[R][W];
  for (int j = 0; j < W; ++j) {
    const int8_t* rows[R];
    fbatch out[R];
    for (int b = 0; b < R; ++b) rows[b] = m.i8() + static_cast<long>(block_rows[b] + j) * m.cols;
    row_dots_q8<R, kSpread>(rows, xq, xs, m.cols, out);
    for (int b = 0; b < R; ++b) sums[b][j] = out[b];
  }
  for (int b = 0; b < R; ++b)
    ((hadd_rows(sums[b]) - fbatch(offset)) * fbatch::load_unaligned(m.scales + block_rows[b]))
        .store_unaligned(y + block_rows[b]);
}

// Decode, rows [r0, end) in whole blocks of W, as kQ8DecodeStreams memory streams
// (stream_blocks), one block of each side by side.
inline void q8_one_token_streams(const Matrix& m, const int8_t* xq, const float* xs, int r0, int end, float* y) {
  const float offset = row_offset_q8(xq, xs, m.cols);
  stream_blocks<kQ8DecodeStreams>(r0, end, [&](auto blocks, const int* first_rows) {
    q8_one_token_blocks<decltype(blocks)::value, true>(m, xq, xs, offset, first_rows, y);
  });
}

// One scale per row (the converter's default): rows [r0, r1) in whole blocks of W, their
// W sums finished by one haddp. Decode reads the rows as streams (stream_blocks);
// prefill has each row block meet every token while it is in L1. Returns the first row
// it left to the reference (the rows after the last whole block), or r0 with groups.
inline int linear_q8_blocks(const Matrix& m, const int8_t* xq, const float* xs, int n_tokens, float* y, int r0,
                            int r1) {
  if (m.group_size != m.cols) return r0;
  const int blocks = m.cols / kActBlock, end = r0 + whole(r1 - r0, W);
  if (n_tokens == 1) {
    q8_one_token_streams(m, xq, xs, r0, end, y);
    return end;
  }
  // Prefill, up to 64 tokens at a time (the offsets' room): each row block meets
  // every token while it is in L1.
  constexpr int kTokens = 64;
  for (int t0 = 0; t0 < n_tokens; t0 += kTokens) {
    const int t1 = n_tokens - t0 < kTokens ? n_tokens : t0 + kTokens;
    float offsets[kTokens];
    for (int t = t0; t < t1; ++t)
      offsets[t - t0] = row_offset_q8(xq + static_cast<long>(t) * m.cols, xs + static_cast<long>(t) * blocks, m.cols);
    for (int r = r0, rows; r < end; r += rows) {
      rows = q8_tile_rows(end - r);
      const int t = q8_token_groups(m, xq, xs, offsets, r, rows, t0, t1, y);  // what the ISA takes in groups
      for (int b = r; b < r + rows; b += W)
        for (int u = t; u < t1; ++u)
          q8_one_token_blocks<1>(m, xq + static_cast<long>(u) * m.cols, xs + static_cast<long>(u) * blocks,
                                 offsets[u - t0], &b, y + static_cast<long>(u) * m.rows);
    }
  }
  return end;
}

}  // namespace simd
}  // namespace moe::kernels
