// y = W x with int8 weights AND int8 activations: the integer dot products of ARMv8.2
// (vdotq_s32), x86 AVX-512 VNNI / AVX-VNNI (vpdpbusd) and AVX2 (vpmaddubsw).
// Activations are quantized per block of 32 columns (x ~ q * s, s = max|x| / 127, as
// llama.cpp's Q8_0), so a block's sum is an exact int32 and the float work is one
// multiply-add per block.
//
// A matrix is eligible when its columns are whole blocks and its weight groups hold
// whole blocks (one scale per row, or groups that are multiples of 32).
//
// This file holds the scalar reference (the common fallback) and the dispatch; each
// instruction set has its own file: linear_q8_neon.hpp (ARMv8.2 dotprod),
// linear_q8_x86.hpp (shared by linear_q8_avx2.hpp and linear_q8_avx512.hpp).
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

// The x86 kernels: AVX2, or AVX-512 with VNNI. AVX-512 without VNNI (Skylake-SP) has no
// kernel of its vector width: int8 weights widen to f32 there, as on targets without
// integer dot products.
#if MOE_SIMD && defined(__AVX2__) && !defined(__ARM_FEATURE_DOTPROD) && \
    (!defined(__AVX512F__) || (defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)))
#define MOE_Q8_X86 1
#else
#define MOE_Q8_X86 0
#endif

#if MOE_SIMD && (defined(__ARM_FEATURE_DOTPROD) || MOE_Q8_X86)
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

// Sum over one block of 32 int8 products (exact).
inline int32_t block_dot_q8(Scalar, const int8_t* w, const int8_t* x) {
  int32_t s = 0;
  for (int i = 0; i < kActBlock; ++i) s += static_cast<int32_t>(w[i]) * static_cast<int32_t>(x[i]);
  return s;
}

}  // namespace moe::kernels

#if MOE_SIMD && defined(__ARM_FEATURE_DOTPROD)
#include "moe/kernels/linear_q8_neon.hpp"
#elif MOE_Q8_X86
#include "moe/kernels/linear_q8_x86.hpp"
#elif MOE_SIMD
namespace moe::kernels {
// No integer dot products (kInt8Dot is false, so the engine never comes here): the
// reference, so that code written for either tag still compiles.
inline void quantize_activations(Simd, const float* x, int n, int cols, int8_t* q, float* scales) {
  quantize_activations(Scalar{}, x, n, cols, q, scales);
}
inline int32_t block_dot_q8(Simd, const int8_t* w, const int8_t* x) { return block_dot_q8(Scalar{}, w, x); }
}  // namespace moe::kernels
#endif

namespace moe::kernels {

// y[t][r] = sum over weight groups g of ws[r][g] * (sum over blocks b in g of
// isum(r, t, b) * xs[t][b]), for rows [r0, r1).
template <class K>
inline void linear_q8_rows(K k, const Matrix& m, const int8_t* xq, const float* xs, int n_tokens, float* y, int r0,
                           int r1) {
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
#if MOE_Q8_X86
  if constexpr (std::is_same_v<K, Simd>) r0 = simd::linear_q8_blocks(m, xq, xs, n_tokens, y, r0, r1);
#endif
  linear_q8_rows(k, m, xq, xs, n_tokens, y, r0, r1);
}

template <class K>
inline void linear_q8(K k, const Matrix& m, const int8_t* xq, const float* xs, int n_tokens, float* y) {
  linear_q8(k, m, xq, xs, n_tokens, y, 0, m.rows);
}

}  // namespace moe::kernels
