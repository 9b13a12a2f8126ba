// One build of the decode and prefill kernels behind a plain-C entry point. kernel_ab.sh
// compiles it twice, from two versions of engine/moe, the old one with `-Dmoe=moe_old` so
// both fit in one program; MOE_AB_FN names the entry point.
#include <cstdlib>

#include "moe/kernels/linear.hpp"
#include "moe/kernels/linear_q8.hpp"
#if __has_include("moe/kernels/linear_q4.hpp")
#include "moe/kernels/linear_q4.hpp"
#define MOE_AB_Q4 1
#endif

// y = W x for n tokens (x [n, cols], y [n, rows]): dtype 0 f32, 1 f16 (x), 2 int8
// weights against int8 activations (xq, xs) where the target multiplies int8 by int8,
// else widened against x; 3 q4 weights, x quantized here as the engine does (a version
// without q4 exits).
void MOE_AB_FN(const void* w, const float* scales, int dtype, int rows, int cols, int n, const float* x,
               const int8_t* xq, const float* xs, float* y) {
  if (dtype == 3) {
#ifdef MOE_AB_Q4
    constexpr int kMaxValues = 64 * 8192;
    alignas(64) static int8_t q[kMaxValues];
    static float q_scales[kMaxValues / 32];
    static int32_t q_sums[kMaxValues / 32];
    if (static_cast<long>(n) * cols > kMaxValues) std::abort();
    moe::kernels::quantize_activations_q4(moe::kernels::Simd{}, x, n, cols, q, q_scales, q_sums);
    moe::Matrix m{w, nullptr, moe::DType::q4, rows, cols, moe::kQ4Block};
    moe::kernels::linear_q4(moe::kernels::Simd{}, m, moe::kernels::ActQ4{q, q_scales, q_sums}, n, y);
    return;
#else
    std::abort();
#endif
  }
  const moe::Matrix m{w, scales, static_cast<moe::DType>(dtype), rows, cols, cols};
  if (dtype == 2 && moe::kernels::kInt8Dot) moe::kernels::linear_q8(moe::kernels::Simd{}, m, xq, xs, n, y);
  else moe::kernels::linear(moe::kernels::Simd{}, m, x, n, y);
}
