// The router's selection: the k largest of n logits, largest first; on equal values
// the lower index wins (a deterministic order the tests can rely on).
#pragma once

#include "moe/kernels/backend.hpp"

namespace moe::kernels {

inline void topk(Scalar, const float* x, int n, int k, int* idx, float* val) {
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int i = 0; i < n; ++i) {
      bool taken = false;
      for (int p = 0; p < j; ++p) taken = taken || idx[p] == i;
      if (!taken && (best < 0 || x[i] > x[best])) best = i;
    }
    idx[j] = best;
    val[j] = x[best];
  }
}

#if MOE_SIMD
// Each round: a vector max over the logits not yet taken, then the lowest lane index
// holding it, found as a vector min over (value == max ? index : n).
inline void topk(Simd, const float* x, int n, int k, int* idx, float* val) {
  using simd::fbatch, simd::W, simd::load;
  constexpr float kNegInf = -__builtin_huge_valf();
  alignas(64) float lanes[W];
  for (int i = 0; i < W; ++i) lanes[i] = static_cast<float>(i);
  const fbatch lane_index = fbatch::load_aligned(lanes);
  auto taken = [&](int i, int j) {
    for (int p = 0; p < j; ++p)
      if (idx[p] == i) return true;
    return false;
  };
  for (int j = 0; j < k; ++j) {
    // Mask earlier picks by comparing indices (x itself is never written).
    fbatch vmax(kNegInf);
    int i = 0;
    for (; i < simd::whole(n, W); i += W) {
      fbatch v = load(x + i);
      const fbatch ids = lane_index + fbatch(static_cast<float>(i));
      for (int p = 0; p < j; ++p) v = xsimd::select(ids == fbatch(static_cast<float>(idx[p])), fbatch(kNegInf), v);
      vmax = xsimd::max(vmax, v);
    }
    float m = simd::hmax(vmax);
    for (; i < n; ++i)
      if (!taken(i, j) && x[i] > m) m = x[i];
    fbatch vfirst(static_cast<float>(n));
    for (i = 0; i < simd::whole(n, W); i += W) {
      const fbatch ids = lane_index + fbatch(static_cast<float>(i));
      fbatch hit = xsimd::select(load(x + i) == fbatch(m), ids, fbatch(static_cast<float>(n)));
      for (int p = 0; p < j; ++p)
        hit = xsimd::select(ids == fbatch(static_cast<float>(idx[p])), fbatch(static_cast<float>(n)), hit);
      vfirst = xsimd::min(vfirst, hit);
    }
    alignas(64) float firsts[W];
    vfirst.store_aligned(firsts);
    int first = n;
    for (int l = 0; l < W; ++l) first = static_cast<int>(firsts[l]) < first ? static_cast<int>(firsts[l]) : first;
    for (; i < n && first == n; ++i)
      if (!taken(i, j) && x[i] == m) first = i;
    // All remaining values NaN: fall back to the lowest free index, as the scalar path.
    if (first == n)
      for (i = 0; i < n && first == n; ++i)
        if (!taken(i, j)) first = i;
    idx[j] = first;
    val[j] = x[first];
  }
}
#endif

}  // namespace moe::kernels
