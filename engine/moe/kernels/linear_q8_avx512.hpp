// int8 x int8 products with AVX-512 VNNI: two blocks of 32 per vector, weights offset
// by 128 (offset_weights) so vpdpbusd takes them unsigned, the offset taken off once
// per token and product. Included by linear_q8_x86.hpp; the AVX2 kernels
// (linear_q8_avx2.hpp) are the parent it falls back to.
#pragma once

namespace moe::kernels::simd {

// AVX-512 takes w + 128 instead of moving w's sign onto x: flipping the top bit makes w
// an unsigned byte, one instruction instead of block_lanes_q8's three per chunk and
// token. Each lane then holds its dot product plus 128 * (its four x), exact in int32;
// that offset depends on x alone, so once scaled it is one number per token and product
// (row_offset_q8), taken from each row's sum at the end (bench/README.md, "Design
// decisions").
inline __m512i offset_weights(const int8_t* w) {
  return _mm512_xor_si512(_mm512_loadu_si512(w), _mm512_set1_epi8(-128));
}

// The 16 int32 lanes of one 64-column chunk, 128 * x included: two blocks at once.
inline __m512i chunk_lanes_q8(const int8_t* w, __m512i x) {
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset_weights(w), x);
}

// Scales for a 64-column chunk: block c/32's in the low 8 lanes, the next block's above.
inline __m512 chunk_scales(const float* s) { return _mm512_insertf32x8(_mm512_set1_ps(s[0]), _mm256_set1_ps(s[1]), 1); }

// Decode's streams: two (why not four: bench/README.md, "Design decisions"), each load
// asking for the bytes kQ8SpreadBytes on (kSpread).
inline constexpr int kQ8DecodeStreams = 2;

// What offset_weights adds to the scaled sum of every row of a product over one token's
// activations: 128 * x over the whole 64-column chunks, scaled as the rows' chunks are.
inline float row_offset_q8(const int8_t* x, const float* xs, int cols) {
  __m512 k = _mm512_setzero_ps();
  for (int c = 0; c < whole(cols, 64); c += 64)
    k = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(-128),
                                                               _mm512_loadu_si512(x + c))),
                        chunk_scales(xs + c / 32), k);
  return _mm512_reduce_add_ps(k);
}

// R rows against one token's activations, per-row weight scales not applied: for each
// row, lanes whose sum is its dot product plus row_offset_q8. Blocks stay in their own
// lanes until scaled by their activation scale, two blocks per vector. Each row gets the
// same operations in the same order whatever R is.
template <int R, bool kSpread = false>
[[gnu::always_inline]] inline void row_dots_q8(const int8_t* const* w, const int8_t* x, const float* xs, int cols,
                                               fbatch* out) {
  static_assert(W == 16, "AVX-512 build expects 16 float lanes");
  __m512 acc0[R], acc1[R];  // two independent chains per row
  __m256 tail[R];
  MOE_UNROLL for (int r = 0; r < R; ++r) {
    acc0[r] = acc1[r] = _mm512_setzero_ps();
    tail[r] = _mm256_setzero_ps();
  }
  int c = 0;
  for (; c < whole(cols, 128); c += 128) {
    __m512i x0 = _mm512_loadu_si512(x + c), x1 = _mm512_loadu_si512(x + c + 64);
    if constexpr (R > 1) __asm__("" : "+v"(x0), "+v"(x1));  // else GCC loads them once per row
    const __m512 s0 = chunk_scales(xs + c / 32), s1 = chunk_scales(xs + c / 32 + 2);
    MOE_UNROLL for (int r = 0; r < R; ++r) {
      if constexpr (kSpread) {
        _mm_prefetch(reinterpret_cast<const char*>(w[r] + c + kQ8SpreadBytes), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(w[r] + c + 64 + kQ8SpreadBytes), _MM_HINT_T0);
      }
      acc0[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(chunk_lanes_q8(w[r] + c, x0)), s0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(chunk_lanes_q8(w[r] + c + 64, x1)), s1, acc1[r]);
    }
  }
  if (c + 64 <= cols) {  // a last whole chunk: offset like the others (row_offset_q8 counts it)
    const __m512i x0 = _mm512_loadu_si512(x + c);
    const __m512 s0 = chunk_scales(xs + c / 32);
    MOE_UNROLL for (int r = 0; r < R; ++r) acc0[r] =
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(chunk_lanes_q8(w[r] + c, x0)), s0, acc0[r]);
    c += 64;
  }
  for (; c < cols; c += 32)  // a lone block of 32: exact lanes, no offset
    MOE_UNROLL for (int r = 0; r < R; ++r) tail[r] =
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_lanes_q8(w[r] + c, x + c)), _mm256_set1_ps(xs[c / 32]), tail[r]);
  MOE_UNROLL for (int r = 0; r < R; ++r) out[r] =
      _mm512_add_ps(_mm512_add_ps(acc0[r], acc1[r]), _mm512_zextps256_ps512(tail[r]));
}

// Prefill: the 16 rows' 64-column chunk turned so that each 32-bit lane holds one row
// (lane j of out[k]: row j's columns 4k..4k+3), each token's 4 columns then broadcast
// against all 16 rows: a block's 8 vpdpbusd sum exactly in int32 before one convert and
// multiply-add, where row-wise lanes need both per 4 columns (bench/README.md, "Design
// decisions"). Four stages of 16 shuffles: 32-bit pairs, 64-bit pairs, then 128-bit lanes.
[[gnu::always_inline]] inline void rows_to_lanes(__m512i (&v)[16]) {
  __m512i t[16];
  MOE_UNROLL for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
  }
  MOE_UNROLL for (int i = 0; i < 16; i += 4) {  // v[i + j], lane L: dword 4L + j of rows i..i+3
    v[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    v[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    v[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    v[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  MOE_UNROLL for (int j = 0; j < 4; ++j) {  // a 4x4 transpose of 128-bit lanes
    t[j] = _mm512_shuffle_i32x4(v[j], v[4 + j], 0x44);
    t[4 + j] = _mm512_shuffle_i32x4(v[j], v[4 + j], 0xee);
    t[8 + j] = _mm512_shuffle_i32x4(v[8 + j], v[12 + j], 0x44);
    t[12 + j] = _mm512_shuffle_i32x4(v[8 + j], v[12 + j], 0xee);
  }
  MOE_UNROLL for (int j = 0; j < 4; ++j) {
    v[j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0x88);
    v[4 + j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0xdd);
    v[8 + j] = _mm512_shuffle_i32x4(t[4 + j], t[12 + j], 0x88);
    v[12 + j] = _mm512_shuffle_i32x4(t[4 + j], t[12 + j], 0xdd);
  }
}

// Tokens in flight in the prefill tile: 2 (4 ran slower: the 16 turned registers take
// half of them).
inline constexpr int kQ8Tokens = 2;
// Row tiles of 16 that share each token's broadcast: 2 when the rows allow. A
// broadcast load per vpdpbusd halves its rate (BM_int8_dot_peak<1> against <2>), so
// two tiles of one 32-column block each take the turned 16 registers, where one tile
// takes a 64-column chunk.
inline constexpr int kQ8Tiles = 2, kQ8TilesFrom = 16;

// One block of NT tokens against T tiles of 16 turned rows (tile u's step s: w[8u + s], 4
// bytes per row lane): each row's exact int32 sum (tile u, token i: out[u * NT + i]),
// started at start[i] (nullptr: 0). x[i]: token i's 4 bytes of step 0; step s is `stride`
// bytes further. Each broadcast meets every tile; two chains per token and tile (even and
// odd steps). The int8 and the q4 turned tiles (linear_q4_x86.hpp) both sum through it.
template <int NT, int T>
[[gnu::always_inline]] inline void turned_block_sums(const __m512i* w, const int8_t* const* x, int stride,
                                                     const int32_t* start, __m512i* out) {
  __m512i a[T][NT], b[T][NT];
  MOE_UNROLL for (int i = 0; i < NT; ++i) {
    const __m512i first = start != nullptr ? _mm512_set1_epi32(start[i]) : _mm512_setzero_si512();
    MOE_UNROLL for (int u = 0; u < T; ++u) {
      a[u][i] = first;
      b[u][i] = _mm512_setzero_si512();
    }
  }
  MOE_UNROLL for (int s = 0; s < 8; s += 2) MOE_UNROLL for (int i = 0; i < NT; ++i) {
    int32_t p, q;
    __builtin_memcpy(&p, x[i] + stride * s, 4);
    __builtin_memcpy(&q, x[i] + stride * (s + 1), 4);
    const __m512i xp = _mm512_set1_epi32(p), xq = _mm512_set1_epi32(q);
    MOE_UNROLL for (int u = 0; u < T; ++u) {
      a[u][i] = _mm512_dpbusd_epi32(a[u][i], w[8 * u + s], xp);
      b[u][i] = _mm512_dpbusd_epi32(b[u][i], w[8 * u + s + 1], xq);
    }
  }
  MOE_UNROLL for (int u = 0; u < T; ++u) MOE_UNROLL for (int i = 0; i < NT; ++i) out[u * NT + i] =
      _mm512_add_epi32(a[u][i], b[u][i]);
}

// Prefill, rows [r, r + 16 T) for tokens [t0, t1) (at most 64) of y = W x. One tile
// turns a 64-column chunk of its 16 rows at a time, two tiles a 32-column block of their
// 32 (row j and row 16 + j in one register: rows_to_lanes then leaves tile 0's block in
// v[0..7] and tile 1's in v[8..15]). offsets[k]: row_offset_q8 of token t0 + k (the whole
// 64-column chunks); a lone last block of 32 carries its own 128 * x, taken off here.
template <int T>
inline void q8_rows_tokens(const Matrix& m, const int8_t* xq, const float* xs, const float* offsets, int r, int t0,
                           int t1, float* y) {
  static_assert(W == 16, "AVX-512 build expects 16 float lanes");
  static_assert(T == 1 || T == 2);
  constexpr int C = 64 / T;  // columns turned at once
  const int cols = m.cols, blocks = cols / 32, n = t1 - t0;
  const int8_t* w = m.i8() + static_cast<long>(r) * cols;
  __m512 acc[T][64 + kQ8Tokens - 1];  // room for a short last group's repeats
  for (int u = 0; u < T; ++u)
    for (int k = 0; k < n + kQ8Tokens - 1; ++k) acc[u][k] = _mm512_setzero_ps();
  __m512i v[16];
  for (int c = 0; c < cols; c += C) {
    const bool lone = T == 1 && c + 64 > cols;  // one block of 32 left
    MOE_UNROLL for (int j = 0; j < 16; ++j) {
      const int8_t* row = w + static_cast<long>(j) * cols + c;
      __m512i bytes;  // plain loads: masked ones are slow from memory
      if constexpr (T == 1) {
        _mm_prefetch(reinterpret_cast<const char*>(row + kQ8PrefetchTiles * 16L * cols), _MM_HINT_T0);
        bytes = lone ? _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row)))
                     : _mm512_loadu_si512(row);
      } else {
        const int8_t* row2 = row + 16L * cols;
        if (c % 64 == 0) {  // a line holds two blocks
          _mm_prefetch(reinterpret_cast<const char*>(row + kQ8PrefetchTiles * 32L * cols), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(row2 + kQ8PrefetchTiles * 32L * cols), _MM_HINT_T0);
        }
        bytes = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row))),
                                   _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row2)), 1);
      }
      v[j] = _mm512_xor_si512(bytes, _mm512_set1_epi8(-128));
    }
    rows_to_lanes(v);
    for (int k = 0; k < n; k += kQ8Tokens) {  // a short last group repeats its last token
      const int8_t* x[kQ8Tokens];
      const float* s[kQ8Tokens];
      MOE_UNROLL for (int i = 0; i < kQ8Tokens; ++i) {
        const long t = t0 + (k + i < n ? k + i : n - 1);
        x[i] = xq + t * cols + c;
        s[i] = xs + t * blocks + c / 32;
      }
      for (int b = 0; b < (T == 2 || lone ? 1 : 2); ++b) {
        __m512i d[T * kQ8Tokens];
        turned_block_sums<kQ8Tokens, T>(v + 8 * b, x, 4, nullptr, d);  // 128 * x included
        MOE_UNROLL for (int i = 0; i < kQ8Tokens; ++i) {
          const __m512 scale = _mm512_set1_ps(s[i][b]);
          MOE_UNROLL for (int u = 0; u < T; ++u) acc[u][k + i] =
              _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[u * kQ8Tokens + i]), scale, acc[u][k + i]);
          x[i] += 32;
        }
      }
    }
  }
  for (int u = 0; u < T; ++u) {
    const fbatch row_scales = fbatch::load_unaligned(m.scales + r + 16 * u);
    for (int k = 0; k < n; ++k) {
      const long t = t0 + k;
      float offset = offsets[k];
      if (cols % 64) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * cols + cols - 32));
        const __m256i sum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(-128), x);
        offset += static_cast<float>(hsum(sum)) * xs[t * blocks + blocks - 1];
      }
      ((fbatch(acc[u][k]) - fbatch(offset)) * row_scales).store_unaligned(y + t * m.rows + r + 16 * u);
    }
  }
}

// Prefill, rows [r, r + rows) (rows: W or 2 W, q8_tile_rows): tokens [t0, t1) when there
// are 4 or more (the turning pays for itself from about 4 tokens: bench/README.md,
// "Design decisions"). Returns the first token left for one at a time.
inline int q8_token_groups(const Matrix& m, const int8_t* xq, const float* xs, const float* offsets, int r, int rows,
                           int t0, int t1, float* y) {
  if (t1 - t0 < 4) return t0;
  if (rows == 2 * W && t1 - t0 >= kQ8TilesFrom) q8_rows_tokens<kQ8Tiles>(m, xq, xs, offsets, r, t0, t1, y);
  else
    for (int b = r; b < r + rows; b += W) q8_rows_tokens<1>(m, xq, xs, offsets, b, t0, t1, y);
  return t1;
}
inline int q8_tile_rows(int left) { return left >= kQ8Tiles * W ? kQ8Tiles * W : W; }

}  // namespace moe::kernels::simd
