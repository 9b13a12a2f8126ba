// int8 x int8 products with AVX2 (vpmaddubsw, or AVX-VNNI's vpdpbusd where present):
// w's sign moved onto x, so each block's lanes are exact and no offset is needed.
// Included by linear_q8_x86.hpp where AVX-512 VNNI is absent.
#pragma once

namespace moe::kernels::simd {

inline float row_offset_q8(const int8_t*, const float*, int) { return 0.f; }  // w's sign moves onto x: no offset

// R rows against one token's activations, per-row weight scales not applied: for each
// row, lanes whose sum is its dot product. Blocks stay in their own lanes until scaled
// by their activation scale. Each row gets the same operations in the same order
// whatever R is.
template <int R>
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

// Prefill: no token groups; every token goes one at a time.
inline int q8_token_groups(const Matrix&, const int8_t*, const float*, const float*, int, int t0, int, float*) {
  return t0;
}

}  // namespace moe::kernels::simd
