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
// Partial sums of w[r][i]*x[i] for R rows as batches; each row's n % W leftover products
// go to its `tail`. Four accumulators per row hide FMA latency. Every row gets the same operations in the same order
// whatever R is, so a row's result does not depend on which rows it was read beside.
template <int R, class T>
[[gnu::always_inline]] inline void partial_dots(const T* const* w, const float* x, int n, fbatch* out, float* tail) {
  fbatch acc[R][4];
  MOE_UNROLL for (int r = 0; r < R; ++r) MOE_UNROLL for (int k = 0; k < 4; ++k) acc[r][k] = fbatch(0.f);
  int i = 0;
  for (; i < simd::whole(n, 4 * W); i += 4 * W) MOE_UNROLL for (int k = 0; k < 4; ++k) {
      const fbatch xv = load(x + i + k * W);
      MOE_UNROLL for (int r = 0; r < R; ++r) acc[r][k] = xsimd::fma(load(w[r] + i + k * W), xv, acc[r][k]);
    }
  for (; i < simd::whole(n, W); i += W)
    MOE_UNROLL for (int r = 0; r < R; ++r) acc[r][0] = xsimd::fma(load(w[r] + i), load(x + i), acc[r][0]);
  MOE_UNROLL for (int r = 0; r < R; ++r) {
    float t = tail[r];  // a local: stores through `tail` could alias x
    for (int j = i; j < n; ++j) t += widen(w[r][j]) * x[j];
    tail[r] = t;
    out[r] = (acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3]);
  }
}

template <class T>
[[gnu::always_inline]] inline fbatch partial_dot(const T* w, const float* x, int n, float& tail) {
  fbatch out;
  partial_dots<1>(&w, x, n, &out, &tail);
  return out;
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
          v = dot_i8(k, m.i8() + row, m.scales + static_cast<long>(r) * m.groups_per_row(), m.group_size, xt, m.cols);
          break;
      }
      y[static_cast<long>(t) * m.rows + r] = v;
    }
  }
}

#if MOE_SIMD
namespace simd {
// Decode (one token), f32/f16/per-row i8: the W rows of each block (R blocks at once)
// finished by one haddp instead of one hadd per row -- with short rows (d 64) the per-row
// reduction cost as much as the row's products.
template <int R, class T>
inline void one_token_blocks(const Matrix& m, const T* w, const float* x, float* y, const int* block_rows) {
  fbatch sums[R][W];
  alignas(64) float tails[R][W];
  for (int j = 0; j < W; ++j) {
    const T* rows[R];
    fbatch out[R];
    float tail[R];
    for (int b = 0; b < R; ++b) {
      rows[b] = w + static_cast<long>(block_rows[b] + j) * m.cols;
      tail[b] = 0.f;
    }
    partial_dots<R>(rows, x, m.cols, out, tail);
    for (int b = 0; b < R; ++b) {
      sums[b][j] = out[b];
      tails[b][j] = tail[b];
      if constexpr (std::is_same_v<T, int8_t>) {  // one scale per row
        sums[b][j] = sums[b][j] * fbatch(m.scales[block_rows[b] + j]);
        tails[b][j] *= m.scales[block_rows[b] + j];
      }
    }
  }
  for (int b = 0; b < R; ++b) (hadd_rows(sums[b]) + fbatch::load_aligned(tails[b])).store_unaligned(y + block_rows[b]);
}

// f32 weights with AVX-512 as four streams: the 32 registers hold four rows' 16
// accumulators. Two elsewhere: f16 did not gain enough to repay the code, with 16 vector
// registers (AVX2, ARMv7) the accumulators would spill, and AArch64 is unmeasured
// (bench/README.md, "Design decisions").
template <class T>
inline constexpr int kDecodeStreams =
#if defined(__AVX512F__)
    std::is_same_v<T, float> ? 4 : 2;
#else
    2;
#endif

template <class T>
inline void one_token_streams(const Matrix& m, const T* w, const float* x, float* y, int r0, int end) {
  stream_blocks<kDecodeStreams<T>>(r0, end, [&](auto blocks, const int* first_rows) {
    one_token_blocks<decltype(blocks)::value>(m, w, x, y, first_rows);
  });
}

inline void linear_one_token(const Matrix& m, const float* x, float* y, int r0, int r1) {
  const int blocked = r0 + whole(r1 - r0, W);
  switch (m.dtype) {
    case DType::f32: one_token_streams(m, m.f32(), x, y, r0, blocked); break;
    case DType::f16: one_token_streams(m, m.f16(), x, y, r0, blocked); break;
    default: one_token_streams(m, m.i8(), x, y, r0, blocked); break;
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
    if (n_tokens == 1 && (m.dtype != DType::i8 || m.group_size == m.cols))
      return simd::linear_one_token(m, x, y, r0, r1);
  }
#endif
  linear_rows(k, m, x, n_tokens, y, r0, r1);
}

template <class K>
inline void linear(K k, const Matrix& m, const float* x, int n_tokens, float* y) {
  linear(k, m, x, n_tokens, y, 0, m.rows);
}

}  // namespace moe::kernels
