// 4-bit x int8 products with the ARMv8.2 dot-product instructions: a 16-byte vector over
// a chunk of a q4 group holds 4 blocks, one per lane (tensor.hpp), so vdotq_s32 sums each
// block's products in its own int32 lane from the first chunk to the last, started at
// the block's -8 * sum(q); each 4 blocks end with one convert and one multiply-add. A
// row's last group of a block count that is not a multiple of 4 goes through the scalar
// reference.
#pragma once

namespace moe::kernels::simd {

inline constexpr int kQ4Tokens = 2;
inline constexpr int kQ4DecodeRows = 1;  // one row at a time (linear_q4's loop)
template <int R>                         // declared for linear_q4's decode branch, which kQ4DecodeRows == 1 discards
void rows_dot_q4(const uint8_t* const*, int, const int8_t*, const float*, const int32_t*, fbatch*);
inline constexpr int kQ4PrefetchBlocks = 0;
inline void prefetch(const uint8_t*) {}

template <int NT>
inline void row_dot_q4(const uint8_t* row, int cols, const int8_t* q, const float* xs, const int32_t* sums, float* y,
                       long y_stride) {
  const int blocks = cols / kQ4Block;
  const uint8x16_t low = vdupq_n_u8(15);
  float32x4_t acc[NT];
  float rest[NT] = {};
  MOE_UNROLL for (int k = 0; k < NT; ++k) acc[k] = vdupq_n_f32(0.f);
  const uint8_t* group = row;
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi), chunk = 4 * g, base = gi * kQ4GroupBlocks * kQ4Block;
    const long at = gi * kQ4GroupBlocks;
    if (g % 4 != 0) {  // the scalar reference on this group alone
      MOE_UNROLL for (int k = 0; k < NT; ++k) rest[k] += group_dot_q4(
          Scalar{}, group, g, q + static_cast<long>(k) * cols + base, xs + k * blocks + at, sums + k * blocks + at);
      group += g * kQ4BlockBytes;
      continue;
    }
    const uint8_t* nibbles = group + 2 * g;
    for (int m = 0; m < g / 4; ++m) {  // blocks 4m .. 4m + 3
      int32x4_t even[NT], odd[NT];
      MOE_UNROLL for (int k = 0; k < NT; ++k) {
        even[k] = vld1q_s32(sums + k * blocks + at + 4 * m);
        odd[k] = vdupq_n_s32(0);
      }
      MOE_UNROLL for (int p = 0; p < 4; ++p) {
        const uint8x16_t v = vld1q_u8(nibbles + chunk * p + 16 * m);
        const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, low)), hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
        MOE_UNROLL for (int k = 0; k < NT; ++k) {
          const int8_t* x = q + static_cast<long>(k) * cols + base + 2 * chunk * p + 16 * m;
          even[k] = vdotq_s32(even[k], lo, vld1q_s8(x));
          odd[k] = vdotq_s32(odd[k], hi, vld1q_s8(x + chunk));
        }
      }
      const float32x4_t ws = vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(group + 8 * m)));
      MOE_UNROLL for (int k = 0; k < NT; ++k) acc[k] = vfmaq_f32(
          acc[k], vcvtq_f32_s32(vaddq_s32(even[k], odd[k])), vmulq_f32(ws, vld1q_f32(xs + k * blocks + at + 4 * m)));
    }
    group += g * kQ4BlockBytes;
  }
  MOE_UNROLL for (int k = 0; k < NT; ++k) y[k * y_stride] = vaddvq_f32(acc[k]) + rest[k];
}

}  // namespace moe::kernels::simd
