// Rotary position embedding, Hugging Face "rotate_half" layout: element i pairs with
// element i + head_dim/2 of the same head (not the interleaved GPT-J layout).
#pragma once

#include <cmath>

#include "moe/kernels/backend.hpp"

namespace moe::kernels {

// cos/sin of pos * theta^(-2i/head_dim) for i < head_dim/2. The angle is rounded to
// float before cos/sin, exactly as transformers computes it in float32: at positions
// in the thousands that rounding moves cos/sin by ~1e-4, more than our tolerance.
inline void rope_angles(int pos, int head_dim, float theta, float* cos_out, float* sin_out) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float inv_freq = 1.f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
    const float angle = static_cast<float>(pos) * inv_freq;
    cos_out[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
    sin_out[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
  }
}

// Rotates n_heads consecutive heads of x in place.
inline void rope(Scalar, float* x, int n_heads, int head_dim, const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

#if MOE_SIMD
inline void rope(Simd, float* x, int n_heads, int head_dim, const float* cos, const float* sin) {
  using simd::fbatch, simd::W, simd::load;
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    int i = 0;
    for (; i < simd::whole(half, W); i += W) {
      const fbatch a = load(v + i), b = load(v + i + half), c = load(cos + i), s = load(sin + i);
      xsimd::fms(a, c, b * s).store_unaligned(v + i);
      xsimd::fma(b, c, a * s).store_unaligned(v + i + half);
    }
    for (; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}
#endif

}  // namespace moe::kernels
