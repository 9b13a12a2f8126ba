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
template <int R>
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
      const __m512i d =
          _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512(x + static_cast<long>(k) * cols + c));
      acc[k] =
          _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), chunk_scales(xs + static_cast<long>(k) * blocks + c / 32), acc[k]);
    }
  }
  for (int k = 0; k < NT; ++k) {
    if (c < cols) {  // a lone block of 32
      const __m256 lanes = _mm256_cvtepi32_ps(block_lanes_q8(w + c, x + static_cast<long>(k) * cols + c));
      acc[k] = _mm512_add_ps(acc[k], _mm512_zextps256_ps512(_mm256_mul_ps(
                                         lanes, _mm256_set1_ps(xs[static_cast<long>(k) * blocks + c / 32]))));
    }
    out[k] = acc[k];
  }
}

// Rows [r, r + W) for tokens [t, t + NT) of y = W x, finished by one haddp per token;
// offsets[k]: row_offset_q8 of token t + k.
template <int NT>
inline void q8_token_group(const Matrix& m, const int8_t* xq, const float* xs, const float* offsets, int r, int t,
                           const fbatch& row_scales, float* y) {
  const int blocks = m.cols / 32;
  fbatch sums[NT][W], one_row[NT];
  for (int j = 0; j < W; ++j) {
    row_dot_q8_tokens<NT>(m.i8() + static_cast<long>(r + j) * m.cols, xq + static_cast<long>(t) * m.cols,
                          xs + static_cast<long>(t) * blocks, m.cols, one_row);
    for (int k = 0; k < NT; ++k) sums[k][j] = one_row[k];
  }
  for (int k = 0; k < NT; ++k)
    ((hadd_rows(sums[k]) - fbatch(offsets[k])) * row_scales).store_unaligned(y + static_cast<long>(t + k) * m.rows + r);
}
// Prefill, rows [r, r + W): tokens [t0, t1) in groups of 8, then 4 (an expert's share
// of a 16-token chunk is often 2-6), sharing each row's loads. Returns the first token
// left for one at a time; offsets[k] is row_offset_q8 of token t0 + k.
inline int q8_token_groups(const Matrix& m, const int8_t* xq, const float* xs, const float* offsets, int r, int t0,
                           int t1, float* y) {
  const fbatch row_scales = fbatch::load_unaligned(m.scales + r);
  int t = t0;
  for (; t + 8 <= t1; t += 8) q8_token_group<8>(m, xq, xs, offsets + (t - t0), r, t, row_scales, y);
  for (; t + 4 <= t1; t += 4) q8_token_group<4>(m, xq, xs, offsets + (t - t0), r, t, row_scales, y);
  return t;
}

}  // namespace moe::kernels::simd
