// int8 x int8 products with the ARMv8.2 dot-product instructions (vdotq_s32): each
// block's sum is exact, and the float work is the scalar reference's, in its order, so
// the two agree bit for bit.
#pragma once

namespace moe::kernels {

inline int32_t block_dot_q8(Simd, const int8_t* w, const int8_t* x) {
  int32x4_t acc = vdotq_s32(vdupq_n_s32(0), vld1q_s8(w), vld1q_s8(x));
  acc = vdotq_s32(acc, vld1q_s8(w + 16), vld1q_s8(x + 16));
  return vaddvq_s32(acc);
}

// No vector quantizer of its own: the scalar reference's operations.
inline void quantize_activations(Simd, const float* x, int n, int cols, int8_t* q, float* scales) {
  quantize_activations(Scalar{}, x, n, cols, q, scales);
}

}  // namespace moe::kernels
