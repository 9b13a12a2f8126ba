// In-place softmax, max-subtracted for stability.
#pragma once

#include <cmath>
#include <limits>

#include "moe/kernels/backend.hpp"

namespace moe::kernels {

inline void softmax(Scalar, float* x, int n) {
  float m = x[0];
  for (int i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  float sum = 0.f;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = 1.f / sum;
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

#if MOE_SIMD
// x[i] <- exp(x[i] - max x) over n >= 1 values; returns their sum (softmax before its
// division, which attention folds into its output). The last n % W values go through
// the same vector code padded with -inf (exp gives 0): short rows are mostly tail.
inline float exp_shifted(Simd, float* x, int n) {
  using simd::fbatch, simd::W, simd::load;
  const int blocked = simd::whole(n, W), rest = n - blocked;
  alignas(64) float tail[W];
  for (int j = 0; j < W; ++j) tail[j] = j < rest ? x[blocked + j] : -std::numeric_limits<float>::infinity();
  fbatch vm = fbatch::load_aligned(tail);
  for (int i = 0; i < blocked; i += W) vm = xsimd::max(vm, load(x + i));
  const fbatch vmax(simd::hmax(vm));
  fbatch vsum(0.f);
  for (int i = 0; i < blocked; i += W) {
    const fbatch e = xsimd::exp(load(x + i) - vmax);
    e.store_unaligned(x + i);
    vsum += e;
  }
  if (rest > 0) {
    const fbatch e = xsimd::exp(fbatch::load_aligned(tail) - vmax);
    e.store_aligned(tail);
    vsum += e;
    for (int j = 0; j < rest; ++j) x[blocked + j] = tail[j];
  }
  return xsimd::hadd(vsum);
}

inline void softmax(Simd, float* x, int n) {
  using simd::fbatch, simd::W, simd::load;
  const float inv = 1.f / exp_shifted(Simd{}, x, n);
  int i = 0;
  for (; i < simd::whole(n, W); i += W) (load(x + i) * fbatch(inv)).store_unaligned(x + i);
  for (; i < n; ++i) x[i] *= inv;
}
#endif

}  // namespace moe::kernels
