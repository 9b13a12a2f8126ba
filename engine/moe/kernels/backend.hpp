// The kernel seam. Every kernel has a scalar reference, overloaded on the `Scalar` tag,
// and (where the target has SIMD) an xsimd version overloaded on `Simd`. The engine is
// a template over the tag, so the same forward pass runs on either; tests hold the two
// equal kernel by kernel and end to end.
//
// SIMD is used when the target has SSE2 or NEON and MOE_FORCE_SCALAR is not defined.
// Cortex-M and other targets without an xsimd architecture get the scalar path.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "moe/fp16.hpp"

#if !defined(MOE_FORCE_SCALAR) && (defined(__SSE2__) || defined(__ARM_NEON))
#define MOE_SIMD 1
// GCC 12 reports false -Wmaybe-uninitialized (-O2) and -Wuninitialized (-O1) inside the
// AVX-512 intrinsics headers (they build registers from deliberately undefined values).
// The warning state is tied to source locations, so silencing it around the first
// inclusion of those headers silences exactly them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif
#include <xsimd/xsimd.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#else
#define MOE_SIMD 0
#endif

// Fully unrolls a loop over a template's small constant count (rows or accumulators
// kept in registers): without it GCC -O2 keeps such arrays in memory.
#define MOE_UNROLL _Pragma("GCC unroll 8")

namespace moe::kernels {

struct Scalar {
  static constexpr const char* name = "scalar";
};

#if MOE_SIMD
struct Simd {
  static constexpr const char* name = "simd";
};
using Best = Simd;
#else
using Best = Scalar;
#endif

// Scalar widening of one stored element, shared by the reference kernels and the
// SIMD kernels' tails.
inline float widen(float v) { return v; }
inline float widen(uint16_t h) { return half_to_float(h); }
inline float widen(int8_t q) { return static_cast<float>(q); }

#if MOE_SIMD
namespace simd {

using fbatch = xsimd::batch<float>;
inline constexpr int W = static_cast<int>(fbatch::size);

inline const char* arch_name() { return xsimd::default_arch::name(); }

inline fbatch load(const float* p) { return fbatch::load_unaligned(p); }

// Where the whole-vector part of n elements ends (a multiple of `step`). SIMD loops run
// `for (i = 0; i < whole(n, W); i += W)`: GCC 12 on armv7 misreads the equivalent
// `i + W <= n` form, once inlined with a known n, as a loop that may overflow.
constexpr int whole(int n, int step) { return n - n % step; }

// Keeps v in a register for the instructions after it: GCC otherwise folds its load
// into each of them, reading the same bytes once per use (x86; elsewhere nothing).
[[gnu::always_inline]] inline void in_register(fbatch& v) {
#if defined(__AVX512F__)
  __m512 r = v;
  __asm__("" : "+v"(r));
  v = r;
#elif defined(__AVX__)
  __m256 r = v;
  __asm__("" : "+x"(r));
  v = r;
#else
  (void)v;
#endif
}

// W int8 values -> W floats. xsimd 8.1's load_as<float>(int8*) converts lane by lane
// (about 5x slower), so each target widens with its own instructions.
inline fbatch load(const int8_t* p) {
#if defined(__AVX512F__)
  static_assert(W == 16, "AVX-512 build expects 16 float lanes");
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#elif defined(__AVX2__)
  static_assert(W == 8, "AVX2 build expects 8 float lanes");
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#elif defined(__ARM_NEON)
  static_assert(W == 4, "NEON build expects 4 float lanes");
  int32_t packed;
  std::memcpy(&packed, p, sizeof packed);
  const int16x8_t wide = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(packed)));
  return vcvtq_f32_s32(vmovl_s16(vget_low_s16(wide)));
#else
  alignas(64) float tmp[W];
  for (int i = 0; i < W; ++i) tmp[i] = static_cast<float>(p[i]);
  return fbatch::load_aligned(tmp);
#endif
}

// W halves -> W floats, with the hardware conversion where the target has one.
inline fbatch load(const uint16_t* p) {
#if defined(__AVX512F__)
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(__F16C__) && defined(__AVX__)
  static_assert(W == 8, "AVX build expects 8 float lanes");
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#elif defined(__aarch64__) || \
    (defined(__ARM_NEON) && defined(__ARM_FP16_FORMAT_IEEE) && defined(__ARM_FP) && (__ARM_FP & 2))
  // aarch64 always; armv7 with half-precision conversions (-mfpu=neon-vfpv4 or
  // neon-fp16, and -mfp16-format=ieee).
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
#else
  alignas(64) float tmp[W];
  for (int i = 0; i < W; ++i) tmp[i] = half_to_float(p[i]);
  return fbatch::load_aligned(tmp);
#endif
}

// Lane j = the horizontal sum of rows[j]: W rows reduced together, halving their count
// at each step. On AVX-512 it is written here to be inlined: xsimd 8.1's haddp stayed an
// out-of-line call and returns its lanes permuted.
[[gnu::always_inline]] inline fbatch hadd_rows(const fbatch* rows) {
#if defined(__AVX512F__)
  static_assert(W == 16, "AVX-512 build expects 16 float lanes");
  // Pairs of rows: in each 128-bit lane, floats 0 and 2 hold row a's partial sums, 1 and 3 row b's.
  __m512 pair[8];
  MOE_UNROLL for (int i = 0; i < 8; ++i) {
    const __m512 a = rows[2 * i], b = rows[2 * i + 1];
    pair[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  }
  // Quads: in each 128-bit lane, one partial sum of each of 4 rows, in order.
  __m512 quad[4];
  MOE_UNROLL for (int i = 0; i < 4; ++i) {
    const __m512d x = _mm512_castps_pd(pair[2 * i]), y = _mm512_castps_pd(pair[2 * i + 1]);
    quad[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // Then the four 128-bit lanes: two of them summed, then the other two.
  __m512 half[2];
  MOE_UNROLL for (int i = 0; i < 2; ++i) half[i] =
      _mm512_add_ps(_mm512_shuffle_f32x4(quad[2 * i], quad[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                    _mm512_shuffle_f32x4(quad[2 * i], quad[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(half[0], half[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(half[0], half[1], _MM_SHUFFLE(3, 1, 3, 1)));
#else
  return xsimd::haddp(rows);
#endif
}

// Decode reads rows [r0, end) (whole blocks of W) as S memory streams: block i of each of
// S equal parts of the rows goes through the kernel together with block i of the others;
// the blocks left over go the same way in pairs, then a lone one by itself: one stream
// of rows leaves read bandwidth unused (bench/README.md, "Design decisions").
// blocks(std::integral_constant<int, R>, const int* first_rows) runs R blocks at once.
template <int S, class Blocks>
inline void stream_blocks(int r0, int end, Blocks&& blocks) {
  static_assert(S == 1 || S == 2 || S == 4, "stream_blocks: 1, 2 or 4 streams");
  const int count = (end - r0) / W, part = count / S;
  for (int i = 0; i < part; ++i) {
    int first_rows[S];
    MOE_UNROLL for (int s = 0; s < S; ++s) first_rows[s] = r0 + (s * part + i) * W;
    blocks(std::integral_constant<int, S>{}, static_cast<const int*>(first_rows));
  }
  if constexpr (S > 1) stream_blocks<S / 2>(r0 + S * part * W, end, blocks);
}

// Largest lane (xsimd 8.1 has no hmax).
inline float hmax(const fbatch& b) {
  alignas(64) float tmp[W];
  b.store_aligned(tmp);
  float m = tmp[0];
  for (int i = 1; i < W; ++i) m = tmp[i] > m ? tmp[i] : m;
  return m;
}

}  // namespace simd
#endif

}  // namespace moe::kernels
