// y = W x for f32, f16 and i8 weights: the kernel that streams the model's bytes.
// One `linear` for both backends; only the dot products differ.
#pragma once

#include <type_traits>

#include "moe/kernels/backend.hpp"
#include "moe/tensor.hpp"

namespace moe::kernels {

// ---- scalar reference -------------------------------------------------------------

template <class T>
inline float dot(Scalar, const T* w, const float* x, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += widen(w[i]) * x[i];
  return s;
}

// Grouped int8: each group of `group` columns has its own scale.
inline float dot_i8(Scalar, const int8_t* w, const float* scales, int group, const float* x, int n) {
  float total = 0.f;
  for (int g = 0; g * group < n; ++g) total += dot(Scalar{}, w + g * group, x + g * group, group) * scales[g];
  return total;
}

// ---- xsimd --------------------------------------------------------------------------
#if MOE_SIMD
namespace simd {
// Partial sums of w[i]*x[i] as a batch; the n % W leftover products go to `tail`.
// Four accumulators hide FMA latency (1 -> 4 measured 2.7x on AVX2).
template <class T>
inline fbatch partial_dot(const T* w, const float* x, int n, float& tail) {
  fbatch a0(0.f), a1(0.f), a2(0.f), a3(0.f);
  int i = 0;
  for (; i < simd::whole(n, 4 * W); i += 4 * W) {
    a0 = xsimd::fma(load(w + i), load(x + i), a0);
    a1 = xsimd::fma(load(w + i + W), load(x + i + W), a1);
    a2 = xsimd::fma(load(w + i + 2 * W), load(x + i + 2 * W), a2);
    a3 = xsimd::fma(load(w + i + 3 * W), load(x + i + 3 * W), a3);
  }
  for (; i < simd::whole(n, W); i += W) a0 = xsimd::fma(load(w + i), load(x + i), a0);
  for (; i < n; ++i) tail += widen(w[i]) * x[i];
  return (a0 + a1) + (a2 + a3);
}
}  // namespace simd

template <class T>
inline float dot(Simd, const T* w, const float* x, int n) {
  float tail = 0.f;
  const simd::fbatch sum = simd::partial_dot(w, x, n, tail);
  return xsimd::hadd(sum) + tail;
}

inline float dot_i8(Simd, const int8_t* w, const float* scales, int group, const float* x, int n) {
  using simd::fbatch, simd::W, simd::load;
  if (group % W != 0 || group == n) {  // one scale per row, or groups that split a vector
    simd::fbatch acc(0.f);
    float tail_total = 0.f;
    for (int g = 0; g * group < n; ++g) {
      float tail = 0.f;
      const fbatch part = simd::partial_dot(w + g * group, x + g * group, group, tail);
      acc = xsimd::fma(part, fbatch(scales[g]), acc);
      tail_total += tail * scales[g];
    }
    return xsimd::hadd(acc) + tail_total;
  }
  // Small whole-vector groups (e.g. 32 columns = 2 AVX-512 vectors): each group's sum is a
  // short independent chain, and consecutive groups scale into four rotating
  // accumulators, so no group waits on the previous one.
  fbatch acc[4] = {fbatch(0.f), fbatch(0.f), fbatch(0.f), fbatch(0.f)};
  const int groups = n / group;
  for (int g = 0; g < groups; ++g) {
    const int8_t* wg = w + g * group;
    const float* xg = x + g * group;
    fbatch part = load(wg) * load(xg);
    for (int i = W; i < group; i += W) part = xsimd::fma(load(wg + i), load(xg + i), part);
    acc[g & 3] = xsimd::fma(part, fbatch(scales[g]), acc[g & 3]);
  }
  return xsimd::hadd((acc[0] + acc[1]) + (acc[2] + acc[3]));
}
#endif

// ---- the kernel -----------------------------------------------------------------------

// y[t] = W x[t] for rows [r0, r1) of W: x is [n_tokens, cols], y is [n_tokens, rows],
// both contiguous. Weights are read once per call: each row meets every token while it
// is in cache, which is what makes prefill cheaper per token than decode.
template <class K>
inline void linear_rows(K k, const Matrix& m, const float* x, int n_tokens, float* y, int r0, int r1) {
  for (int r = r0; r < r1; ++r) {
    const long row = static_cast<long>(r) * m.cols;
    for (int t = 0; t < n_tokens; ++t) {
      const float* xt = x + static_cast<long>(t) * m.cols;
      float v;
      switch (m.dtype) {
        case DType::f32: v = dot(k, m.f32() + row, xt, m.cols); break;
        case DType::f16: v = dot(k, m.f16() + row, xt, m.cols); break;
        default:
          v = dot_i8(k, m.i8() + row, m.scales + static_cast<long>(r) * m.groups_per_row(), m.group_size, xt,
                     m.cols);
          break;
      }
      y[static_cast<long>(t) * m.rows + r] = v;
    }
  }
}

#if MOE_SIMD
namespace simd {
// Decode (one token), f32/f16/per-row i8: W rows at a time, their W horizontal sums
// done together by one haddp instead of one hadd per row -- with short rows (d 64) the
// per-row reduction cost as much as the row's products.
inline void linear_one_token(const Matrix& m, const float* x, float* y, int r0, int r1) {
  const int blocked = r0 + whole(r1 - r0, W);
  for (int r = r0; r < blocked; r += W) {
    fbatch sums[W];
    alignas(64) float tails[W];
    for (int j = 0; j < W; ++j) {
      const long row = static_cast<long>(r + j) * m.cols;
      tails[j] = 0.f;
      switch (m.dtype) {
        case DType::f32: sums[j] = partial_dot(m.f32() + row, x, m.cols, tails[j]); break;
        case DType::f16: sums[j] = partial_dot(m.f16() + row, x, m.cols, tails[j]); break;
        default:
          sums[j] = partial_dot(m.i8() + row, x, m.cols, tails[j]) * fbatch(m.scales[r + j]);
          tails[j] *= m.scales[r + j];
          break;
      }
    }
    (hadd_rows(sums) + fbatch::load_aligned(tails)).store_unaligned(y + r);
  }
  linear_rows(Simd{}, m, x, 1, y, blocked, r1);
}
}  // namespace simd
#endif

// Rows [r0, r1) of y = W x (a worker's share of a product; see engine.hpp).
template <class K>
inline void linear(K k, const Matrix& m, const float* x, int n_tokens, float* y, int r0, int r1) {
#if MOE_SIMD
  if constexpr (std::is_same_v<K, Simd>) {
    if (n_tokens == 1 && (m.dtype != DType::i8 || m.group_size == m.cols)) return simd::linear_one_token(m, x, y, r0, r1);
  }
#endif
  linear_rows(k, m, x, n_tokens, y, r0, r1);
}

template <class K>
inline void linear(K k, const Matrix& m, const float* x, int n_tokens, float* y) {
  linear(k, m, x, n_tokens, y, 0, m.rows);
}

}  // namespace moe::kernels
