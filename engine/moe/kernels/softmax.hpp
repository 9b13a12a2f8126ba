// In-place softmax, max-subtracted for stability.
#pragma once

#include <cmath>

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
inline void softmax(Simd, float* x, int n) {
  using simd::fbatch, simd::W, simd::load;
  float m = x[0];
  int i = 0;
  if (n >= W) {
    fbatch vm = load(x);
    for (i = W; i < simd::whole(n, W); i += W) vm = xsimd::max(vm, load(x + i));
    m = simd::hmax(vm);
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  const fbatch vmax(m);
  fbatch vsum(0.f);
  for (i = 0; i < simd::whole(n, W); i += W) {
    const fbatch e = xsimd::exp(load(x + i) - vmax);
    e.store_unaligned(x + i);
    vsum += e;
  }
  float sum = xsimd::hadd(vsum);
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = 1.f / sum;
  const fbatch vinv(inv);
  for (i = 0; i < simd::whole(n, W); i += W) (load(x + i) * vinv).store_unaligned(x + i);
  for (; i < n; ++i) x[i] *= inv;
}
#endif

}  // namespace moe::kernels
