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

inline void scale(float* y, float a, int n) {
  for (int i = 0; i < n; ++i) y[i] *= a;
}

// y /= a: a division, as the references write it (Granite's logits_scaling), not a
// multiplication by 1/a, which rounds differently.
inline void divide(float* y, float a, int n) {
  for (int i = 0; i < n; ++i) y[i] /= a;
}

// y clamped to [-limit, limit] (OLMoE's clip_qkv).
inline void clamp(float* y, float limit, int n) {
  for (int i = 0; i < n; ++i) y[i] = y[i] < -limit ? -limit : y[i] > limit ? limit : y[i];
}

inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

}  // namespace moe::kernels
