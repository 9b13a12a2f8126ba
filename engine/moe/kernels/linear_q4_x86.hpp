// 4-bit x int8 products on x86. A vector of 4-byte lanes over a chunk of a q4 group has
// block j in lane j (tensor.hpp), so each lane sums its block's 32 products in int32 from
// the first chunk to the last -- started at the block's -8 * sum(q) -- and the group ends
// with one convert and one multiply-add per 16 blocks (AVX-512) or 8 (AVX2). Nibbles are
// the unsigned operand as they are: 0..15 against |q| <= 127.
// AVX-512 VNNI: a whole group per vector (a row's last, shorter group: load_short).
// AVX2: a group in two halves; vpmaddubsw's int16 pair sums of the group's 8 chunks stay
// below 8 * 2 * 15 * 127 = 30480 before vpmaddwd widens them (AVX-VNNI: vpdpbusd).
#pragma once

namespace moe::kernels::simd {

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
inline constexpr int kQ4Tokens = 4;

// The first `bytes` (< 64) bytes at p, the rest of the vector 0: plain loads for whole
// 16-byte pieces (a row's last group is usually 4, 8 or 12 blocks), a masked load
// otherwise. Measured: masked loads from memory ran at a quarter of the bandwidth.
inline __m512i load_short(const void* p, int bytes) {
  const auto* b = static_cast<const uint8_t*>(p);
  switch (bytes) {
    case 16: return _mm512_zextsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
    case 32: return _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
    case 48:
      return _mm512_inserti32x4(_mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b))),
                                _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 32)), 2);
    default: return _mm512_maskz_loadu_epi8((uint64_t{1} << bytes) - 1, b);
  }
}

// One row against NT tokens (token k's q, scales, sums at k * cols, k * blocks);
// writes y[k * y_stride].
template <int NT>
inline void row_dot_q4(const uint8_t* row, int cols, const int8_t* q, const float* xs, const int32_t* sums, float* y,
                       long y_stride) {
  const int blocks = cols / kQ4Block;
  const __m512i low = _mm512_set1_epi8(15);
  __m512 acc[NT];
  MOE_UNROLL for (int k = 0; k < NT; ++k) acc[k] = _mm512_setzero_ps();
  const uint8_t* group = row;
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi), chunk = 4 * g, base = gi * kQ4GroupBlocks * kQ4Block;
    const uint8_t* nibbles = group + 2 * g;
    const long at = gi * kQ4GroupBlocks;
    __m512i even[NT], odd[NT];  // lanes of the even and the odd chunks: two chains
    __m512 scale[NT];
    const __m512 ws =
        _mm512_cvtph_ps(g == kQ4GroupBlocks ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group))
                                            : _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << g) - 1), group));
    if (g == kQ4GroupBlocks) {
      MOE_UNROLL for (int k = 0; k < NT; ++k) {
        even[k] = _mm512_loadu_si512(sums + k * blocks + at);
        odd[k] = _mm512_setzero_si512();
        scale[k] = _mm512_mul_ps(ws, _mm512_loadu_ps(xs + k * blocks + at));
      }
      MOE_UNROLL for (int p = 0; p < 4; ++p) {
        const __m512i v = _mm512_loadu_si512(nibbles + 64 * p);
        const __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
        MOE_UNROLL for (int k = 0; k < NT; ++k) {
          const int8_t* x = q + static_cast<long>(k) * cols + base + 128 * p;
          even[k] = _mm512_dpbusd_epi32(even[k], lo, _mm512_loadu_si512(x));
          odd[k] = _mm512_dpbusd_epi32(odd[k], hi, _mm512_loadu_si512(x + 64));
        }
      }
    } else {  // the row's last group, g < 16 blocks: chunks of 4g bytes
      const __mmask16 lanes = static_cast<__mmask16>((1u << g) - 1);
      MOE_UNROLL for (int k = 0; k < NT; ++k) {
        even[k] = _mm512_maskz_loadu_epi32(lanes, sums + k * blocks + at);
        odd[k] = _mm512_setzero_si512();
        scale[k] = _mm512_mul_ps(ws, _mm512_maskz_loadu_ps(lanes, xs + k * blocks + at));
      }
      for (int p = 0; p < 4; ++p) {
        const __m512i v = load_short(nibbles + chunk * p, chunk);
        const __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
        MOE_UNROLL for (int k = 0; k < NT; ++k) {
          const int8_t* x = q + static_cast<long>(k) * cols + base + 2 * chunk * p;
          even[k] = _mm512_dpbusd_epi32(even[k], lo, load_short(x, chunk));
          odd[k] = _mm512_dpbusd_epi32(odd[k], hi, load_short(x + chunk, chunk));
        }
      }
    }
    MOE_UNROLL for (int k = 0; k < NT; ++k) acc[k] =
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(even[k], odd[k])), scale[k], acc[k]);
    group += g * kQ4BlockBytes;
  }
  MOE_UNROLL for (int k = 0; k < NT; ++k) y[k * y_stride] = _mm512_reduce_add_ps(acc[k]);
}

// Decode: R rows against one token, each chunk of x loaded once for the R rows; out[r]
// holds lanes whose sum is row r's result (summed W rows at a time by hadd_rows).
template <int R>
[[gnu::always_inline]] inline void rows_dot_q4(const uint8_t* const* rows, int cols, const int8_t* q, const float* xs,
                                               const int32_t* sums, fbatch* out) {
  const int blocks = cols / kQ4Block;
  const __m512i low = _mm512_set1_epi8(15);
  __m512 acc[R];
  MOE_UNROLL for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  long offset = 0;  // the group's bytes within a row
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi), chunk = 4 * g, base = gi * kQ4GroupBlocks * kQ4Block;
    const long at = gi * kQ4GroupBlocks;
    __m512i even[R], odd[R];
    __m512 x_scale;
    if (g == kQ4GroupBlocks) {
      const __m512i start = _mm512_loadu_si512(sums + at);
      x_scale = _mm512_loadu_ps(xs + at);
      MOE_UNROLL for (int r = 0; r < R; ++r) even[r] = start, odd[r] = _mm512_setzero_si512();
      MOE_UNROLL for (int p = 0; p < 4; ++p) {
        const __m512i x0 = _mm512_loadu_si512(q + base + 128 * p), x1 = _mm512_loadu_si512(q + base + 128 * p + 64);
        MOE_UNROLL for (int r = 0; r < R; ++r) {
          const __m512i v = _mm512_loadu_si512(rows[r] + offset + 2 * g + 64 * p);
          even[r] = _mm512_dpbusd_epi32(even[r], _mm512_and_si512(v, low), x0);
          odd[r] = _mm512_dpbusd_epi32(odd[r], _mm512_and_si512(_mm512_srli_epi16(v, 4), low), x1);
        }
      }
      MOE_UNROLL for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(
          _mm512_cvtepi32_ps(_mm512_add_epi32(even[r], odd[r])),
          _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + offset))),
                        x_scale),
          acc[r]);
    } else {
      const __mmask16 lanes = static_cast<__mmask16>((1u << g) - 1);
      const __m512i start = _mm512_maskz_loadu_epi32(lanes, sums + at);
      x_scale = _mm512_maskz_loadu_ps(lanes, xs + at);
      MOE_UNROLL for (int r = 0; r < R; ++r) even[r] = start, odd[r] = _mm512_setzero_si512();
      for (int p = 0; p < 4; ++p) {
        const __m512i x0 = load_short(q + base + 2 * chunk * p, chunk),
                      x1 = load_short(q + base + 2 * chunk * p + chunk, chunk);
        MOE_UNROLL for (int r = 0; r < R; ++r) {
          const __m512i v = load_short(rows[r] + offset + 2 * g + chunk * p, chunk);
          even[r] = _mm512_dpbusd_epi32(even[r], _mm512_and_si512(v, low), x0);
          odd[r] = _mm512_dpbusd_epi32(odd[r], _mm512_and_si512(_mm512_srli_epi16(v, 4), low), x1);
        }
      }
      MOE_UNROLL for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(
          _mm512_cvtepi32_ps(_mm512_add_epi32(even[r], odd[r])),
          _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lanes, rows[r] + offset)), x_scale), acc[r]);
    }
    offset += g * kQ4BlockBytes;
  }
  MOE_UNROLL for (int r = 0; r < R; ++r) out[r] = acc[r];
}
inline constexpr int kQ4DecodeRows = 4;
inline constexpr int kQ4PrefetchBlocks = 2;
inline void prefetch(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }

#else  // AVX2 (and AVX-VNNI)
inline constexpr int kQ4Tokens = 2;
inline constexpr int kQ4DecodeRows = 2;  // 16 registers: two rows' accumulators and the shared x
inline constexpr int kQ4PrefetchBlocks = 4;
inline void prefetch(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }

// 4-byte lanes [0, n) of p, the rest 0.
inline __m256i load_lanes(const void* p, int n) {
  if (n == 8) return _mm256_loadu_si256(static_cast<const __m256i*>(p));
  if (n == 4) return _mm256_zextsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(p)));  // masked loads are slow
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_epi32(static_cast<const int*>(p), _mm256_cmpgt_epi32(_mm256_set1_epi32(n), index));
}
inline __m256 load_lanes_ps(const float* p, int n) {
  if (n == 8) return _mm256_loadu_ps(p);
  if (n == 4) return _mm256_zextps128_ps256(_mm_loadu_ps(p));
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), index));
}

#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
#define MOE_Q4_DPBUSD 1
inline __m256i dpbusd(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#endif
}
#else
#define MOE_Q4_DPBUSD 0
#endif

// The n f16 scales at p (n <= 8) as floats, the rest 0.
inline __m256 load_scales(const uint8_t* p, int n) {
  if (n == 8) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  if (n == 4) return _mm256_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  alignas(16) uint16_t halves[8] = {};
  for (int j = 0; j < n; ++j) halves[j] = static_cast<uint16_t>(p[2 * j] | p[2 * j + 1] << 8);
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(halves)));
}

// Decode: R rows against one token, each chunk of x loaded once for the R rows; out[r]
// holds lanes whose sum is row r's result.
template <int R>
[[gnu::always_inline]] inline void rows_dot_q4(const uint8_t* const* rows, int cols, const int8_t* q, const float* xs,
                                               const int32_t* sums, fbatch* out) {
  const int blocks = cols / kQ4Block;
  const __m256i low = _mm256_set1_epi8(15);
  __m256 acc[R];
  MOE_UNROLL for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  long offset = 0;
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi), chunk = 4 * g, base = gi * kQ4GroupBlocks * kQ4Block;
    const long at = gi * kQ4GroupBlocks;
    for (int h = 0; h * 8 < g; ++h) {
      const int n = g - 8 * h < 8 ? g - 8 * h : 8;
      const __m256i start = load_lanes(sums + at + 8 * h, n);
      __m256i even[R], odd[R];
#if MOE_Q4_DPBUSD
      MOE_UNROLL for (int r = 0; r < R; ++r) even[r] = start, odd[r] = _mm256_setzero_si256();
#else
      MOE_UNROLL for (int r = 0; r < R; ++r) even[r] = odd[r] = _mm256_setzero_si256();
#endif
      for (int p = 0; p < 4; ++p) {
        const int8_t* x = q + base + 2 * chunk * p + 32 * h;
        const __m256i x0 = load_lanes(x, n), x1 = load_lanes(x + chunk, n);
        MOE_UNROLL for (int r = 0; r < R; ++r) {
          const __m256i v = load_lanes(rows[r] + offset + 2 * g + chunk * p + 32 * h, n);
          const __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
#if MOE_Q4_DPBUSD
          even[r] = dpbusd(even[r], lo, x0);
          odd[r] = dpbusd(odd[r], hi, x1);
#else
          even[r] = _mm256_add_epi16(even[r], _mm256_maddubs_epi16(lo, x0));
          odd[r] = _mm256_add_epi16(odd[r], _mm256_maddubs_epi16(hi, x1));
#endif
        }
      }
      const __m256 x_scale = load_lanes_ps(xs + at + 8 * h, n);
      MOE_UNROLL for (int r = 0; r < R; ++r) {
#if MOE_Q4_DPBUSD
        const __m256i isum = _mm256_add_epi32(even[r], odd[r]);
#else
        const __m256i isum =
            _mm256_add_epi32(start, _mm256_madd_epi16(_mm256_add_epi16(even[r], odd[r]), _mm256_set1_epi16(1)));
#endif
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                 _mm256_mul_ps(load_scales(rows[r] + offset + 16 * h, n), x_scale), acc[r]);
      }
    }
    offset += g * kQ4BlockBytes;
  }
  MOE_UNROLL for (int r = 0; r < R; ++r) out[r] = acc[r];
}

template <int NT>
inline void row_dot_q4(const uint8_t* row, int cols, const int8_t* q, const float* xs, const int32_t* sums, float* y,
                       long y_stride) {
  const int blocks = cols / kQ4Block;
  const __m256i low = _mm256_set1_epi8(15);
  __m256 acc[NT];
  MOE_UNROLL for (int k = 0; k < NT; ++k) acc[k] = _mm256_setzero_ps();
  const uint8_t* group = row;
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi), chunk = 4 * g, base = gi * kQ4GroupBlocks * kQ4Block;
    const uint8_t* nibbles = group + 2 * g;
    const long at = gi * kQ4GroupBlocks;
    for (int h = 0; h * 8 < g; ++h) {  // blocks 8h .. 8h + n of the group
      const int n = g - 8 * h < 8 ? g - 8 * h : 8;
      const __m256 ws = load_scales(group + 16 * h, n);
#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
      __m256i even[NT], odd[NT];
      MOE_UNROLL for (int k = 0; k < NT; ++k) {
        even[k] = load_lanes(sums + k * blocks + at + 8 * h, n);
        odd[k] = _mm256_setzero_si256();
      }
#else
      __m256i even[NT], odd[NT];  // int16 pair sums of the even and odd chunks
      MOE_UNROLL for (int k = 0; k < NT; ++k) even[k] = odd[k] = _mm256_setzero_si256();
#endif
      for (int p = 0; p < 4; ++p) {
        const __m256i v = load_lanes(nibbles + chunk * p + 32 * h, n);
        const __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        MOE_UNROLL for (int k = 0; k < NT; ++k) {
          const int8_t* x = q + static_cast<long>(k) * cols + base + 2 * chunk * p + 32 * h;
          const __m256i x0 = load_lanes(x, n), x1 = load_lanes(x + chunk, n);
#if defined(__AVXVNNI__) && !(defined(__AVX512VNNI__) && defined(__AVX512VL__))
          even[k] = _mm256_dpbusd_avx_epi32(even[k], lo, x0);
          odd[k] = _mm256_dpbusd_avx_epi32(odd[k], hi, x1);
#elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
          even[k] = _mm256_dpbusd_epi32(even[k], lo, x0);
          odd[k] = _mm256_dpbusd_epi32(odd[k], hi, x1);
#else
          even[k] = _mm256_add_epi16(even[k], _mm256_maddubs_epi16(lo, x0));
          odd[k] = _mm256_add_epi16(odd[k], _mm256_maddubs_epi16(hi, x1));
#endif
        }
      }
      MOE_UNROLL for (int k = 0; k < NT; ++k) {
#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
        const __m256i isum = _mm256_add_epi32(even[k], odd[k]);
#else
        const __m256i isum =
            _mm256_add_epi32(load_lanes(sums + k * blocks + at + 8 * h, n),
                             _mm256_madd_epi16(_mm256_add_epi16(even[k], odd[k]), _mm256_set1_epi16(1)));
#endif
        const __m256 scale = _mm256_mul_ps(ws, load_lanes_ps(xs + k * blocks + at + 8 * h, n));
        acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[k]);
      }
    }
    group += g * kQ4BlockBytes;
  }
  MOE_UNROLL for (int k = 0; k < NT; ++k) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[k]), _mm256_extractf128_ps(acc[k], 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    y[k * y_stride] = _mm_cvtss_f32(s);
  }
}
#endif

}  // namespace moe::kernels::simd
