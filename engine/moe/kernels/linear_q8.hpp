// y = W x with int8 weights AND int8 activations: the integer dot products of ARMv8.2
// (vdotq_s32) and, later, x86 VNNI. Activations are quantized per block of 32 columns
// (x ~ q * s, s = max|x| / 127, as llama.cpp's Q8_0), so a block's sum is an exact int32
// and the float work is one multiply-add per 32 products.
//
// A matrix is eligible when its columns are whole blocks and its weight groups hold
// whole blocks (one scale per row, or groups that are multiples of 32). The scalar
// reference and the SIMD kernels do the same float operations in the same order, so
// they agree bit for bit.
//
// Used when the target has integer dot products (compile time: kInt8Dot); elsewhere
// int8 weights are widened to f32 against f32 activations (linear.hpp).
#pragma once

#include <cmath>
#include <cstdint>

#include "moe/kernels/backend.hpp"
#include "moe/tensor.hpp"

namespace moe::kernels {

inline constexpr int kActBlock = 32;

#if MOE_SIMD && defined(__ARM_FEATURE_DOTPROD)
inline constexpr bool kInt8Dot = true;
#else
inline constexpr bool kInt8Dot = false;
#endif

inline bool q8_eligible(const Matrix& m) {
  return m.dtype == DType::i8 && m.cols % kActBlock == 0 && (m.group_size == m.cols || m.group_size % kActBlock == 0);
}

// x [n, cols] -> q [n, cols] int8 and scales [n, cols/32]. One implementation: it runs
// once per product, not per weight.
inline void quantize_activations(const float* x, int n, int cols, int8_t* q, float* scales) {
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

#if MOE_SIMD && defined(__ARM_FEATURE_DOTPROD)
inline int32_t block_dot_q8(Simd, const int8_t* w, const int8_t* x) {
  int32x4_t acc = vdotq_s32(vdupq_n_s32(0), vld1q_s8(w), vld1q_s8(x));
  acc = vdotq_s32(acc, vld1q_s8(w + 16), vld1q_s8(x + 16));
  return vaddvq_s32(acc);
}
#endif

// y[t][r] = sum over weight groups g of ws[r][g] * (sum over blocks b in g of
// isum(r, t, b) * xs[t][b]).
template <class K>
inline void linear_q8(K k, const Matrix& m, const int8_t* xq, const float* xs, int n_tokens, float* y) {
  const int blocks = m.cols / kActBlock, per_group = m.group_size / kActBlock, groups = m.groups_per_row();
  for (int r = 0; r < m.rows; ++r) {
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

}  // namespace moe::kernels
