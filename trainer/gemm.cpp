#include "trainer/gemm.hpp"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <memory>
#include <utility>
#include <vector>

#include "moe/kernels/backend.hpp"

namespace moe::train {

template <class T>
void gemm_reference(int M, int N, int K, const T* A, long a_row, long a_col, const T* B, long b_row, long b_col, T* C,
                    long ldc, bool accumulate) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < M; ++i) {
    for (int n = 0; n < N; ++n) {
      T s = 0;
      for (int k = 0; k < K; ++k) s += A[i * a_row + k * a_col] * B[k * b_row + n * b_col];
      T& c = C[i * ldc + n];
      c = accumulate ? c + s : s;
    }
  }
}

template void gemm_reference<float>(int, int, int, const float*, long, long, const float*, long, long, float*, long,
                                    bool);
template void gemm_reference<double>(int, int, int, const double*, long, long, const double*, long, long, double*, long,
                                     bool);

#if MOE_SIMD
namespace {

using kernels::simd::fbatch;
constexpr int W = kernels::simd::W;
constexpr int NR = 2 * W;  // panel width: two vectors (32 floats on AVX-512)
constexpr int MR = W == 8 ? 6 : 8;  // rows per tile: 2 * MR accumulators, 16 or 32 registers

// Bp[p][k][NR] = B[k][p*NR + j], zero beyond N: each micro-kernel step loads NR
// consecutive floats. (Runs inside gemm's caller thread team when large.)
void pack_b(int N, int K, const float* B, long b_row, long b_col, float* Bp) {
  const int panels = (N + NR - 1) / NR;
#pragma omp parallel for schedule(static)
  for (int p = 0; p < panels; ++p) {
    float* dst = Bp + static_cast<long>(p) * K * NR;
    const int n0 = p * NR, width = std::min(NR, N - n0);
    if (b_col == 1) {  // rows of B are contiguous: copy row segments
      for (int k = 0; k < K; ++k) {
        const float* src = B + k * b_row + n0;
        for (int j = 0; j < width; ++j) dst[k * NR + j] = src[j];
        for (int j = width; j < NR; ++j) dst[k * NR + j] = 0.f;
      }
    } else {  // B is a transpose: read each source column (a row of the stored matrix) in order
      for (int j = 0; j < NR; ++j) {
        if (j < width) {
          const float* src = B + (n0 + j) * b_col;
          for (int k = 0; k < K; ++k) dst[k * NR + j] = src[k * b_row];
        } else {
          for (int k = 0; k < K; ++k) dst[k * NR + j] = 0.f;
        }
      }
    }
  }
}

// C[0..R, 0..cols) (+)= A[0..R, :] B-panel, R <= MR rows. The panel is NR floats per k
// at stride `b_stride`: a packed panel (stride NR) or B itself when its rows are contiguous.
template <int R>
void micro_kernel(int K, const float* A, long a_row, long a_col, const float* Bp, long b_stride, float* C, long ldc,
                  int cols, bool accumulate) {
  fbatch c0[R], c1[R];
  for (int r = 0; r < R; ++r) c0[r] = c1[r] = fbatch(0.f);
  const float* a[R];
  for (int r = 0; r < R; ++r) a[r] = A + r * a_row;
  for (int k = 0; k < K; ++k) {
    const fbatch b0 = fbatch::load_unaligned(Bp + k * b_stride), b1 = fbatch::load_unaligned(Bp + k * b_stride + W);
    for (int r = 0; r < R; ++r) {
      const fbatch av(a[r][k * a_col]);
      c0[r] = xsimd::fma(av, b0, c0[r]);
      c1[r] = xsimd::fma(av, b1, c1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float* c = C + r * ldc;
    if (cols == NR) {
      if (accumulate) {
        (fbatch::load_unaligned(c) + c0[r]).store_unaligned(c);
        (fbatch::load_unaligned(c + W) + c1[r]).store_unaligned(c + W);
      } else {
        c0[r].store_unaligned(c);
        c1[r].store_unaligned(c + W);
      }
    } else {
      alignas(64) float tmp[NR];
      c0[r].store_aligned(tmp);
      c1[r].store_aligned(tmp + W);
      for (int j = 0; j < cols; ++j) c[j] = accumulate ? c[j] + tmp[j] : tmp[j];
    }
  }
}

using MicroKernel = void (*)(int, const float*, long, long, const float*, long, float*, long, int, bool);
template <int... R>
constexpr std::array<MicroKernel, MR + 1> micro_kernels(std::integer_sequence<int, R...>) {
  return {nullptr, &micro_kernel<R + 1>...};
}
constexpr auto kKernels = micro_kernels(std::make_integer_sequence<int, MR>{});

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

}  // namespace

template <>
void gemm<float>(int M, int N, int K, const float* A, long a_row, long a_col, const float* B, long b_row, long b_col,
                 float* C, long ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.f);
    return;
  }
  const int panels = (N + NR - 1) / NR;
  // When B's rows are contiguous (the two backward products), its full panels are read
  // in place and only a ragged last panel is packed; a transposed B (the forward product)
  // is packed whole.
  const bool direct = b_col == 1;
  const int packed_panels = direct ? (N % NR != 0 ? 1 : 0) : panels;
  const int first_packed = direct ? panels - packed_panels : 0;
  // Packing scratch, grown when needed; one per thread (experts run their products
  // concurrently, each on one thread).
  thread_local std::unique_ptr<float, AlignedFree> packed;
  thread_local size_t capacity = 0;
  const size_t need = static_cast<size_t>(packed_panels) * static_cast<size_t>(K) * NR;
  if (need > capacity) {
    capacity = need;
    packed.reset(static_cast<float*>(std::aligned_alloc(64, capacity * sizeof(float))));
  }
  if (packed_panels > 0) pack_b(N - first_packed * NR, K, B + first_packed * NR * b_col, b_row, b_col, packed.get());
  const int mblocks = (M + MR - 1) / MR;
  const float* Bp = packed.get();
#pragma omp parallel for schedule(static)
  for (int tile = 0; tile < mblocks * panels; ++tile) {
    const int mb = tile / panels, p = tile % panels;
    const int i0 = mb * MR, rows = std::min(MR, M - i0), n0 = p * NR;
    const bool in_place = p < first_packed;
    const float* panel = in_place ? B + n0 : Bp + static_cast<long>(p - first_packed) * K * NR;
    kKernels[rows](K, A + i0 * a_row, a_row, a_col, panel, in_place ? b_row : NR, C + i0 * ldc + n0, ldc,
                   std::min(NR, N - n0), accumulate);
  }
}
#else
template <>
void gemm<float>(int M, int N, int K, const float* A, long a_row, long a_col, const float* B, long b_row, long b_col,
                 float* C, long ldc, bool accumulate) {
  gemm_reference(M, N, K, A, a_row, a_col, B, b_row, b_col, C, ldc, accumulate);
}
#endif

template <>
void gemm<double>(int M, int N, int K, const double* A, long a_row, long a_col, const double* B, long b_row, long b_col,
                  double* C, long ldc, bool accumulate) {
  gemm_reference(M, N, K, A, a_row, a_col, B, b_row, b_col, C, ldc, accumulate);
}

}  // namespace moe::train
