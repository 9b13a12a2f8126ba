// One build of the decode kernels behind a plain-C entry point. kernel_ab.sh compiles it
// twice, from two versions of engine/moe, the old one with `-Dmoe=moe_old` so both fit in
// one program; MOE_AB_FN names the entry point.
#include "moe/kernels/linear.hpp"
#include "moe/kernels/linear_q8.hpp"

// y = W x for one token: dtype 0 f32, 1 f16 (x), 2 int8 weights against int8
// activations (xq, xs) where the target multiplies int8 by int8, else widened against x.
void MOE_AB_FN(const void* w, const float* scales, int dtype, int rows, int cols, const float* x, const int8_t* xq,
               const float* xs, float* y) {
  const moe::Matrix m{w, scales, static_cast<moe::DType>(dtype), rows, cols, cols};
  if (dtype == 2 && moe::kernels::kInt8Dot) moe::kernels::linear_q8(moe::kernels::Simd{}, m, xq, xs, 1, y);
  else moe::kernels::linear(moe::kernels::Simd{}, m, x, 1, y);
}
