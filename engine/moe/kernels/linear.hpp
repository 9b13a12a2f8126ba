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

// q4 weights against f32 activations (targets without integer dot products, and
// --f32-activations): each group dequantized (tensor.hpp), then multiplied.
inline float dot_q4(Scalar, const uint8_t* row, const float* x, int cols) {
  const int blocks = cols / kQ4Block;
  float w[kQ4GroupBlocks * kQ4Block];
  float total = 0.f;
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi);
    dequantize_q4_group(row, g, w);
    const float* xg = x + gi * kQ4GroupBlocks * kQ4Block;
    for (int c = 0; c < g * kQ4Block; ++c) total += w[c] * xg[c];
    row += g * kQ4BlockBytes;
  }
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

// The nibbles of a q4 group of g blocks as signed bytes (nibble - 8) in column order:
// pair p's low nibbles are chunk 2p, its high nibbles chunk 2p + 1 (tensor.hpp).
inline void unpack_q4_group(const uint8_t* nibbles, int g, int8_t* out) {
  const int chunk = 4 * g;
  for (int p = 0; p < 4; ++p) {
    const uint8_t* in = nibbles + chunk * p;
    int8_t* lo = out + 2 * chunk * p;
    int8_t* hi = lo + chunk;
    int b = 0;
#if defined(__ARM_NEON)
    for (; b + 16 <= chunk; b += 16) {
      const uint8x16_t v = vld1q_u8(in + b);
      vst1q_s8(lo + b, vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(15))), vdupq_n_s8(8)));
      vst1q_s8(hi + b, vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vdupq_n_s8(8)));
    }
#elif defined(__SSE2__)
    const __m128i low = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    for (; b + 16 <= chunk; b += 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + b));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(lo + b), _mm_sub_epi8(_mm_and_si128(v, low), eight));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(hi + b),
                       _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), low), eight));
    }
#endif
    for (; b < chunk; ++b) {
      lo[b] = static_cast<int8_t>((in[b] & 15) - 8);
      hi[b] = static_cast<int8_t>((in[b] >> 4) - 8);
    }
  }
}
}  // namespace simd

// Each group's nibbles unpacked to bytes, widened and multiplied as int8 rows are, by a
// per-column scale that repeats every chunk (4 columns of a chunk share a block).
inline float dot_q4(Simd, const uint8_t* row, const float* x, int cols) {
  using simd::fbatch, simd::W, simd::load;
  const int blocks = cols / kQ4Block;
  alignas(64) int8_t w[kQ4GroupBlocks * kQ4Block];
  alignas(64) float column_scale[4 * kQ4GroupBlocks];
  fbatch acc[2] = {fbatch(0.f), fbatch(0.f)};
  float rest = 0.f;
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi), chunk = 4 * g;
    const float* xg = x + gi * kQ4GroupBlocks * kQ4Block;
    if (chunk % W != 0) {  // a short last group that vectors do not divide
      rest += dot_q4(Scalar{}, row, xg, g * kQ4Block);
    } else {
      for (int j = 0; j < g; ++j) {
        const float s = half_to_float(static_cast<uint16_t>(row[2 * j] | row[2 * j + 1] << 8));
        for (int i = 0; i < 4; ++i) column_scale[4 * j + i] = s;
      }
      simd::unpack_q4_group(row + 2 * g, g, w);
      for (int k = 0; k < 8; ++k)
        for (int b = 0; b < chunk; b += W) {
          const int c = chunk * k + b;
          acc[k & 1] = xsimd::fma(load(w + c) * fbatch::load_aligned(column_scale + b), load(xg + c), acc[k & 1]);
        }
    }
    row += g * kQ4BlockBytes;
  }
  return xsimd::hadd(acc[0] + acc[1]) + rest;
}

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
        case DType::q4: v = dot_q4(k, m.q4_row(r), xt, m.cols); break;
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
    if (n_tokens == 1 &&
        (m.dtype == DType::f32 || m.dtype == DType::f16 || (m.dtype == DType::i8 && m.group_size == m.cols)))
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
