// int8 x int8 products with AVX2 (vpmaddubsw, or AVX-VNNI's vpdpbusd where present):
// w's sign moved onto x, so each block's lanes are exact and no offset is needed.
// Included by linear_q8_x86.hpp where AVX-512 VNNI is absent.
#pragma once

namespace moe::kernels::simd {

inline float row_offset_q8(const int8_t*, const float*, int) { return 0.f; }  // w's sign moves onto x: no offset

// Decode's streams: four, left to the hardware prefetcher. There it read more than two
// streams whose loads asked for the bytes ahead (as AVX-512's do), and any such request
// added to four streams cost (bench/README.md, "AVX2 decode: four streams, no software
// prefetch").
inline constexpr int kQ8DecodeStreams = 4;

// R rows against one token's activations, per-row weight scales not applied: for each
// row, lanes whose sum is its dot product. Blocks stay in their own lanes until scaled
// by their activation scale. Each row gets the same operations in the same order
// whatever R is. kSpread (a decode stream's rows) asks for nothing more here.
template <int R, bool kSpread = false>
[[gnu::always_inline]] inline void row_dots_q8(const int8_t* const* w, const int8_t* x, const float* xs, int cols,
                                               fbatch* out) {
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
    MOE_UNROLL for (int r = 0; r < R; ++r) acc0[r] =
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_lanes_q8(w[r] + c, x + c)), _mm256_set1_ps(xs[c / 32]), acc0[r]);
  MOE_UNROLL for (int r = 0; r < R; ++r) out[r] = _mm256_add_ps(acc0[r], acc1[r]);
}

// Prefill: 8 rows' block of 32 columns turned so that each 32-bit lane holds one row
// (lane j of v[k]: row j's columns 4k..4k+3), as the AVX-512 kernel turns 16: each
// token's 4 columns are then broadcast against all 8 rows, and the block's int32 sums
// meet one convert and one multiply-add per 8 rows instead of per row. Three stages of
// 8 shuffles: 32-bit pairs, 64-bit pairs, 128-bit lanes.
[[gnu::always_inline]] inline void rows_to_lanes(__m256i (&v)[8]) {
  __m256i t[8];
  MOE_UNROLL for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
  }
  MOE_UNROLL for (int i = 0; i < 8; i += 4) {  // v[i + j], lane L: dword 4L + j of rows i..i+3
    v[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
    v[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
    v[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
    v[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  MOE_UNROLL for (int j = 0; j < 4; ++j) {
    t[j] = _mm256_permute2x128_si256(v[j], v[4 + j], 0x20);
    t[4 + j] = _mm256_permute2x128_si256(v[j], v[4 + j], 0x31);
  }
  MOE_UNROLL for (int k = 0; k < 8; ++k) v[k] = t[k];
}

// Prefill, rows [r, r + 8) for tokens [t0, t1) (at most 64) of y = W x: per block, the
// rows turned (|w| as the unsigned operand, w's signs moved onto each broadcast x).
inline void q8_rows_tokens(const Matrix& m, const int8_t* xq, const float* xs, int r, int t0, int t1, float* y) {
  const int cols = m.cols, blocks = cols / 32, n = t1 - t0;
  const int8_t* w = m.i8() + static_cast<long>(r) * cols;
  __m256 acc[64];
  for (int k = 0; k < n; ++k) acc[k] = _mm256_setzero_ps();
  for (int c = 0; c < cols; c += 32) {
    __m256i signs[8], u[8];
    MOE_UNROLL for (int j = 0; j < 8; ++j) {
      const int8_t* row = w + static_cast<long>(j) * cols + c;
      _mm_prefetch(reinterpret_cast<const char*>(row + kQ8PrefetchTiles * 8L * cols), _MM_HINT_T0);
      signs[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
    }
    rows_to_lanes(signs);
    MOE_UNROLL for (int k = 0; k < 8; ++k) u[k] = _mm256_abs_epi8(signs[k]);
    for (int k = 0; k < n; ++k) {
      const long t = t0 + k;
      const int8_t* x = xq + t * cols + c;
      __m256i a = _mm256_setzero_si256(), b = a;  // two chains
      MOE_UNROLL for (int j = 0; j < 8; j += 2) {
        int32_t p, q;
        __builtin_memcpy(&p, x + 4 * j, 4);
        __builtin_memcpy(&q, x + 4 * j + 4, 4);
        a = dot4_q8(a, u[j], _mm256_sign_epi8(_mm256_set1_epi32(p), signs[j]));
        b = dot4_q8(b, u[j + 1], _mm256_sign_epi8(_mm256_set1_epi32(q), signs[j + 1]));
      }
      acc[k] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a, b)), _mm256_set1_ps(xs[t * blocks + c / 32]), acc[k]);
    }
  }
  const fbatch row_scales = fbatch::load_unaligned(m.scales + r);
  for (int k = 0; k < n; ++k) (fbatch(acc[k]) * row_scales).store_unaligned(y + static_cast<long>(t0 + k) * m.rows + r);
}

// Prefill, rows [r, r + W): tokens [t0, t1) when there are 4 or more. Returns the first
// token left for one at a time.
inline int q8_token_groups(const Matrix& m, const int8_t* xq, const float* xs, const float*, int r, int, int t0, int t1,
                           float* y) {
  if (t1 - t0 < 4) return t0;
  q8_rows_tokens(m, xq, xs, r, t0, t1, y);
  return t1;
}
inline int q8_tile_rows(int) { return W; }  // rows that q8_token_groups takes at once

}  // namespace moe::kernels::simd
