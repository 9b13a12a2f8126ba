// RMSNorm (llama family) and LayerNorm (classic family), computed in the same order as
// the PyTorch references so the fp32 path matches them to rounding.
#pragma once

#include <cmath>

#include "moe/kernels/backend.hpp"

namespace moe::kernels {

// out = x / sqrt(mean(x^2) + eps) * w        (Hugging Face MixtralRMSNorm)
inline void rmsnorm(Scalar, const float* x, const float* w, int n, float eps, float* out) {
  float ss = 0.f;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (int i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

// out = (x - mean) / sqrt(var + eps) * w + b   (torch.nn.LayerNorm, biased variance)
inline void layernorm(Scalar, const float* x, const float* w, const float* b, int n, float eps, float* out) {
  float mean = 0.f;
  for (int i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<float>(n);
  float var = 0.f;
  for (int i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.f / std::sqrt(var / static_cast<float>(n) + eps);
  for (int i = 0; i < n; ++i) out[i] = (x[i] - mean) * inv * w[i] + b[i];
}

#if MOE_SIMD
inline void rmsnorm(Simd, const float* x, const float* w, int n, float eps, float* out) {
  using simd::fbatch, simd::W, simd::load;
  fbatch acc(0.f);
  int i = 0;
  for (; i < simd::whole(n, W); i += W) acc = xsimd::fma(load(x + i), load(x + i), acc);
  float ss = xsimd::hadd(acc);
  for (; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.f / std::sqrt(ss / static_cast<float>(n) + eps);
  const fbatch vinv(inv);
  for (i = 0; i < simd::whole(n, W); i += W) (load(w + i) * (load(x + i) * vinv)).store_unaligned(out + i);
  for (; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

inline void layernorm(Simd, const float* x, const float* w, const float* b, int n, float eps, float* out) {
  using simd::fbatch, simd::W, simd::load;
  fbatch acc(0.f);
  int i = 0;
  for (; i < simd::whole(n, W); i += W) acc += load(x + i);
  float mean = xsimd::hadd(acc);
  for (; i < n; ++i) mean += x[i];
  mean /= static_cast<float>(n);
  const fbatch vmean(mean);
  acc = fbatch(0.f);
  for (i = 0; i < simd::whole(n, W); i += W) {
    const fbatch d = load(x + i) - vmean;
    acc = xsimd::fma(d, d, acc);
  }
  float var = xsimd::hadd(acc);
  for (; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.f / std::sqrt(var / static_cast<float>(n) + eps);
  const fbatch vinv(inv);
  for (i = 0; i < simd::whole(n, W); i += W)
    xsimd::fma((load(x + i) - vmean) * vinv, load(w + i), load(b + i)).store_unaligned(out + i);
  for (; i < n; ++i) out[i] = (x[i] - mean) * inv * w[i] + b[i];
}
#endif

}  // namespace moe::kernels
