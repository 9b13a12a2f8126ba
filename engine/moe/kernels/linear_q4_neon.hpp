// 4-bit x int8 products with the ARMv8.2 dot-product instructions: a 16-byte vector over
// a chunk of a q4 group holds 4 blocks, one per lane (tensor.hpp), so vdotq_s32 sums each
// block's products in its own int32 lane from the first chunk to the last, started at
// the block's -8 * sum(q); each 4 blocks end with one convert and one multiply-add. A
// row's last group of a block count that is not a multiple of 4 goes through the scalar
// reference.
#pragma once

namespace moe::kernels::simd {

// Tile shapes: 2 rows for 1 or 2 tokens.
inline constexpr int kQ4Tokens = 2;
constexpr int q4_tile_rows(int) { return 2; }
inline constexpr int kQ4DecodeRows = 2, kQ4DecodeRowsFromCols = 0;  // no decode tile of its own
inline constexpr int kQ4DecodeStreams = 1, kQ4DecodeStreamsFromCols = 0;
inline constexpr long kQ4PrefetchBytes = 0;
inline constexpr long kQ4SpreadBytes = 0;
inline void prefetch(const uint8_t*) {}
inline constexpr long kQ4StreamStartBytes = 0;

// A tile: R rows against NT tokens (token k's q, scales and sums at k * cols and
// k * blocks); out[k * out_stride + r] gets lanes whose sum is row r's result for token k.
template <int R, int NT>
[[gnu::always_inline]] inline void tile_q4(const uint8_t* const* rows, int cols, const int8_t* q, const float* xs,
                                           const int32_t* sums, fbatch* out, int out_stride) {
  const int blocks = cols / kQ4Block;
  const uint8x16_t low = vdupq_n_u8(15);
  float32x4_t acc[R][NT];
  float rest[R][NT] = {};
  MOE_UNROLL for (int r = 0; r < R; ++r) MOE_UNROLL for (int k = 0; k < NT; ++k) acc[r][k] = vdupq_n_f32(0.f);
  long offset = 0;  // the group's bytes within a row
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi), chunk = 4 * g, base = gi * kQ4GroupBlocks * kQ4Block;
    const long at = gi * kQ4GroupBlocks;
    if (g % 4 != 0) {  // the scalar reference on this group alone
      MOE_UNROLL for (int r = 0; r < R; ++r) MOE_UNROLL for (int k = 0; k < NT; ++k) rest[r][k] +=
          group_dot_q4(Scalar{}, rows[r] + offset, g, q + static_cast<long>(k) * cols + base,
                       xs + static_cast<long>(k) * blocks + at, sums + static_cast<long>(k) * blocks + at);
      offset += g * kQ4BlockBytes;
      continue;
    }
    for (int m = 0; m < g / 4; ++m) {  // blocks 4m .. 4m + 3
      int32x4_t even[R][NT], odd[R][NT];
      MOE_UNROLL for (int k = 0; k < NT; ++k) {
        const int32x4_t start = vld1q_s32(sums + static_cast<long>(k) * blocks + at + 4 * m);
        MOE_UNROLL for (int r = 0; r < R; ++r) even[r][k] = start, odd[r][k] = vdupq_n_s32(0);
      }
      MOE_UNROLL for (int p = 0; p < 4; ++p) {
        int8x16_t lo[R], hi[R];
        MOE_UNROLL for (int r = 0; r < R; ++r) {
          const uint8x16_t v = vld1q_u8(rows[r] + offset + 2 * g + chunk * p + 16 * m);
          lo[r] = vreinterpretq_s8_u8(vandq_u8(v, low));
          hi[r] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
        }
        MOE_UNROLL for (int k = 0; k < NT; ++k) {
          const int8_t* x = q + static_cast<long>(k) * cols + base + 2 * chunk * p + 16 * m;
          const int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + chunk);
          MOE_UNROLL for (int r = 0; r < R; ++r) {
            even[r][k] = vdotq_s32(even[r][k], lo[r], x0);
            odd[r][k] = vdotq_s32(odd[r][k], hi[r], x1);
          }
        }
      }
      MOE_UNROLL for (int r = 0; r < R; ++r) {
        const float32x4_t ws = vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(rows[r] + offset + 8 * m)));
        MOE_UNROLL for (int k = 0; k < NT; ++k) acc[r][k] =
            vfmaq_f32(acc[r][k], vcvtq_f32_s32(vaddq_s32(even[r][k], odd[r][k])),
                      vmulq_f32(ws, vld1q_f32(xs + static_cast<long>(k) * blocks + at + 4 * m)));
      }
    }
    offset += g * kQ4BlockBytes;
  }
  MOE_UNROLL for (int r = 0; r < R; ++r) MOE_UNROLL for (int k = 0; k < NT; ++k) out[k * out_stride + r] =
      vaddq_f32(acc[r][k], vsetq_lane_f32(rest[r][k], vdupq_n_f32(0.f), 0));
}

// One group of g blocks of one token's activations quantized (quantize_activations_q4):
// block j's columns are 4 at each of the group's 8 steps, so a block is 8 vectors.
// x, q: the group's first column; scales, sums: its first block. (AArch64: across-lane
// max and sum.)
#if defined(__aarch64__)
#define MOE_Q4_SIMD_QUANTIZER 1  // linear_q4.hpp: quantize_activations_q4(Simd) calls this one
inline void quantize_group_q4(const float* x, int g, int8_t* q, float* scales, int32_t* sums) {
  const int chunk = 4 * g;
  for (int j = 0; j < g; ++j) {
    float32x4_t v[8], amax = vdupq_n_f32(0.f);
    MOE_UNROLL for (int k = 0; k < 8; ++k) {
      v[k] = vld1q_f32(x + chunk * k + 4 * j);
      amax = vmaxnmq_f32(vabsq_f32(v[k]), amax);  // a NaN is not kept (as the scalar quantizer)
    }
    const float m = vmaxnmvq_f32(amax), inv = m > 0.f ? 127.f / m : 0.f;
    int32x4_t sum = vdupq_n_s32(0);
    MOE_UNROLL for (int k = 0; k < 8; k += 2) {
      const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(v[k], inv)), b = vcvtnq_s32_f32(vmulq_n_f32(v[k + 1], inv));
      sum = vaddq_s32(sum, vaddq_s32(a, b));
      const int32x2_t bytes = vreinterpret_s32_s8(vmovn_s16(vcombine_s16(vmovn_s32(a), vmovn_s32(b))));
      const int32_t lo = vget_lane_s32(bytes, 0), hi = vget_lane_s32(bytes, 1);
      __builtin_memcpy(q + chunk * k + 4 * j, &lo, 4);
      __builtin_memcpy(q + chunk * (k + 1) + 4 * j, &hi, 4);
    }
    scales[j] = m / 127.f;
    sums[j] = -8 * vaddvq_s32(sum);
  }
}
#endif

}  // namespace moe::kernels::simd
