// Expert activations and the small vector ops of the residual stream.
#pragma once

#include <cmath>

#include "moe/kernels/backend.hpp"

namespace moe::kernels {

// gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x): SwiGLU of the llama family.
inline void silu_mul(Scalar, float* gate, const float* up, int n) {
  for (int i = 0; i < n; ++i) gate[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

#if MOE_SIMD
inline void silu_mul(Simd, float* gate, const float* up, int n) {
  using simd::fbatch, simd::W, simd::load;
  const fbatch one(1.f);
  int i = 0;
  for (; i < simd::whole(n, W); i += W) {
    const fbatch g = load(gate + i);
    (g / (one + xsimd::exp(-g)) * load(up + i)).store_unaligned(gate + i);
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}
#endif

// The plain loops below are vectorised by the compiler; they need no SIMD twin.

// out[i] = max(0, x[i] + bias[i]): the classic family's expert activation after W1.
inline void bias_relu(float* x, const float* bias, int n) {
  for (int i = 0; i < n; ++i) {
    const float v = x[i] + bias[i];
    x[i] = v > 0.f ? v : 0.f;
  }
}

inline void add(float* y, const float* x, int n) {
  for (int i = 0; i < n; ++i) y[i] += x[i];
}

// y += a * x
inline void axpy(float* y, float a, const float* x, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace moe::kernels
