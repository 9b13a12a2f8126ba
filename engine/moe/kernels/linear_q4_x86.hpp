// 4-bit x int8 products on x86. A vector of 4-byte lanes over a chunk of a q4 group has
// block j in lane j (tensor.hpp), so each lane sums its block's 32 products in int32 from
// the first chunk to the last -- started at the block's -8 * sum(q) -- and the group ends
// with one convert and one multiply-add per 16 blocks (AVX-512) or 8 (AVX2). Nibbles are
// the unsigned operand as they are: 0..15 against |q| <= 127.
// One kernel per ISA, tile_q4<R, NT>: R rows against NT tokens, each row's bytes
// unpacked once for the NT tokens (decode is the NT = 1 tile; linear_q4 picks the shapes).
// Prefill of kQ4TurnedFrom tokens or more takes q4_rows_tokens (end of this file), which
// both ISAs share: W rows turned so that each lane holds a row.
// AVX-512 VNNI: a whole group per vector (a row's last, shorter group: load_short).
// AVX2: a group in two halves, with vpmaddubsw (AVX-VNNI: vpdpbusd).
#pragma once

#define MOE_Q4_SIMD_QUANTIZER 1  // both instruction sets below have quantize_group_q4

namespace moe::kernels::simd {

// always_inline: GCC 12 found a plain inline wrapper "looping const" (a prefetch has no
// effect in its model) and its dead-code pass deleted the calls not yet inlined (AVX2's
// tile_q4 lost its per-step prefetches).
[[gnu::always_inline]] inline void prefetch(const uint8_t* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
}
// linear_q4's burst per row block asks for the bytes this far past the block's start; a
// decode tile of the ISA's own instead has each load ask for the bytes kQ8SpreadBytes
// on, as int8 decode's streams do (bench/README.md, "Design decisions").
inline constexpr long kQ4PrefetchBytes = 4096;
inline constexpr long kQ4SpreadBytes = kQ8SpreadBytes;

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)  // as linear_q8_avx512.hpp

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

// Decode's own tiles: against one token, each step's load asking for the bytes
// kQ4SpreadBytes further on (in place of linear_q4's burst per row block). Rows of
// kQ4DecodeStreamsFromCols columns or more are read as kQ4DecodeStreams streams
// (stream_blocks), the tile taking one row from each; shorter rows (from
// kQ4DecodeRowsFromCols) take tiles of kQ4DecodeRows rows. Prefill's tiles (and the
// one-token tile of kQ4Tokens' rest) keep the burst (bench/README.md, "Design decisions").
inline constexpr int kQ4DecodeRows = 4, kQ4DecodeRowsFromCols = 0;
inline constexpr int kQ4DecodeStreams = 2, kQ4DecodeStreamsFromCols = 512;
// Each stream's loads ask for the bytes kQ4SpreadBytes on, so its first ones are asked
// for at its start.
inline constexpr long kQ4StreamStartBytes = kQ4SpreadBytes;

// One group of a tile: R rows' group at `offset` against NT tokens' activations,
// added to acc. Each (row, token) pair sums the group's blocks in int32 lanes, started at
// the blocks' -8 * sum(q), in C chains (more when R * NT alone would leave the
// dot-product unit waiting on the previous result: bench_kernels' int8_dot_chains); then
// one convert and one multiply-add. kSpread: decode's prefetch per load.
template <int R, int NT, bool kWhole, bool kSpread>
[[gnu::always_inline]] inline void tile_group_q4(const uint8_t* const* rows, long offset, int g, int cols,
                                                 const int8_t* q, const float* xs, const int32_t* sums, long at,
                                                 int base, __m512 (&acc)[R][NT]) {
  // Chains 2i sum low nibbles, 2i + 1 high ones (kept as 16 h: no shift per load; exact,
  // at most 4 * 4 * 240 * 127 a lane and group), step p going to pair p % (C / 2).
  constexpr int C = R * NT >= 8 ? 1 : R * NT >= 4 ? 2 : 4;
  const int blocks = cols / kQ4Block, chunk = kWhole ? 64 : 4 * g;
  const __mmask16 lanes = static_cast<__mmask16>((1u << g) - 1);
  const auto bytes = [&](const void* p) {
    if constexpr (kWhole) return _mm512_loadu_si512(p);
    else return load_short(p, chunk);
  };
  const __m512i low = _mm512_set1_epi8(15);
  __m512i isum[C][R][NT];  // the blocks' -8 * sum(q) joins at the end
  MOE_UNROLL for (int c = 0; c < C; ++c) MOE_UNROLL for (int r = 0; r < R; ++r) MOE_UNROLL for (int k = 0; k < NT; ++k)
      isum[c][r][k] = _mm512_setzero_si512();
  MOE_UNROLL for (int p = 0; p < 4; ++p) {
    __m512i lo[R], hi[R];
    MOE_UNROLL for (int r = 0; r < R; ++r) {
      if constexpr (kSpread) prefetch(rows[r] + offset + 2 * g + chunk * p + kQ4SpreadBytes);
      const __m512i v = bytes(rows[r] + offset + 2 * g + chunk * p);
      lo[r] = _mm512_and_si512(v, low);
      hi[r] = C > 1 ? _mm512_andnot_si512(low, v) : _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    }
    MOE_UNROLL for (int k = 0; k < NT; ++k) {
      const int8_t* x = q + static_cast<long>(k) * cols + base + 2 * chunk * p;
      __m512i x0 = bytes(x), x1 = bytes(x + chunk);
      // In registers: GCC otherwise folds the load into each row's vpdpbusd, and the
      // 64-byte loads, not the dot products, bound the tile (bench/README.md, "Design
      // decisions").
      if constexpr (R > 1) __asm__("" : "+v"(x0), "+v"(x1));
      const int cl = C == 1 ? 0 : 2 * (p % (C / 2)), ch = C == 1 ? 0 : cl + 1;
      MOE_UNROLL for (int r = 0; r < R; ++r) {
        isum[cl][r][k] = _mm512_dpbusd_epi32(isum[cl][r][k], lo[r], x0);
        isum[ch][r][k] = _mm512_dpbusd_epi32(isum[ch][r][k], hi[r], x1);
      }
    }
  }
  __m512 x_scale[NT];
  __m512i start[NT];
  MOE_UNROLL for (int k = 0; k < NT; ++k) {
    const float* s = xs + static_cast<long>(k) * blocks + at;
    const int32_t* b = sums + static_cast<long>(k) * blocks + at;
    x_scale[k] = kWhole ? _mm512_loadu_ps(s) : _mm512_maskz_loadu_ps(lanes, s);
    start[k] = kWhole ? _mm512_loadu_si512(b) : _mm512_maskz_loadu_epi32(lanes, b);
  }
  MOE_UNROLL for (int r = 0; r < R; ++r) {
    const uint8_t* scales = rows[r] + offset;
    const __m512 ws = _mm512_cvtph_ps(kWhole ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales))
                                             : _mm256_maskz_loadu_epi16(lanes, scales));
    MOE_UNROLL for (int k = 0; k < NT; ++k) {
      __m512i total = _mm512_add_epi32(start[k], isum[0][r][k]);
      if constexpr (C > 1) {
        __m512i high = isum[1][r][k];
        MOE_UNROLL for (int c = 2; c < C; c += 2) {
          total = _mm512_add_epi32(total, isum[c][r][k]);
          high = _mm512_add_epi32(high, isum[c + 1][r][k]);
        }
        total = _mm512_add_epi32(total, _mm512_srai_epi32(high, 4));
      }
      acc[r][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), _mm512_mul_ps(ws, x_scale[k]), acc[r][k]);
    }
  }
}

// A tile: R rows against NT tokens (token k's q, scales and sums at k * cols and
// k * blocks), each row's bytes loaded once for the NT tokens and each token's once per
// row. out[k * out_stride + r] gets lanes whose sum is row r's result for token k.
// kSpread: decode's own tiles (kQ4DecodeRows rows, or a stream tile).
template <int R, int NT, bool kSpread = NT == 1 && R == kQ4DecodeRows>
[[gnu::always_inline]] inline void tile_q4(const uint8_t* const* rows, int cols, const int8_t* q, const float* xs,
                                           const int32_t* sums, fbatch* out, int out_stride) {
  const int blocks = cols / kQ4Block;
  __m512 acc[R][NT];
  MOE_UNROLL for (int r = 0; r < R; ++r) MOE_UNROLL for (int k = 0; k < NT; ++k) acc[r][k] = _mm512_setzero_ps();
  long offset = 0;  // the group's bytes within a row
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi), base = gi * kQ4GroupBlocks * kQ4Block;
    const long at = gi * kQ4GroupBlocks;
    if (g == kQ4GroupBlocks) tile_group_q4<R, NT, true, kSpread>(rows, offset, g, cols, q, xs, sums, at, base, acc);
    else tile_group_q4<R, NT, false, kSpread>(rows, offset, g, cols, q, xs, sums, at, base, acc);
    offset += g * kQ4BlockBytes;
  }
  MOE_UNROLL for (int r = 0; r < R; ++r) MOE_UNROLL for (int k = 0; k < NT; ++k) out[k * out_stride + r] = acc[r][k];
}
// Tile shapes: rows per tile for NT tokens (32 registers: R * NT int32 sums, as many
// float accumulators, the row's unpacked bytes).
inline constexpr int kQ4Tokens = 4;
constexpr int q4_tile_rows(int nt) { return nt >= 4 ? 2 : nt == 2 ? 4 : 8; }

// One group of g blocks of one token's activations quantized (quantize_activations_q4):
// a step of the group is 4g columns, 4 per block, so lanes 4j..4j+3 of the step's
// vectors belong to block j (of the vector's four); their maximum and sum come from two
// in-lane shuffles. x, q: the group's first column; scales, sums: its first block.
inline void quantize_group_q4(const float* x, int g, int8_t* q, float* scales, int32_t* sums) {
  const int chunk = 4 * g, nv = (chunk + 15) / 16;  // vectors per step, the last maybe partial
  const auto lanes = [&](int v) {
    return static_cast<__mmask16>(chunk - 16 * v >= 16 ? 0xffff : (1u << (chunk - 16 * v)) - 1);
  };
  const auto per_block = [](__m512 v, auto op) {  // op over each block's 4 lanes, in all 4
    v = op(v, _mm512_permute_ps(v, 0xb1));
    return op(v, _mm512_permute_ps(v, 0x4e));
  };
  for (int v = 0; v < nv; ++v) {
    const __mmask16 m = lanes(v);
    __m512 amax = _mm512_setzero_ps();
    for (int k = 0; k < 8; ++k)  // max(|x|, amax): a NaN is not kept (as the scalar quantizer)
      amax = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + chunk * k + 16 * v)), amax);
    amax = per_block(amax, [](__m512 a, __m512 b) { return _mm512_max_ps(a, b); });
    const __m512 inv =
        _mm512_maskz_div_ps(_mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(127.f), amax);
    __m512i sum = _mm512_setzero_si512();
    for (int k = 0; k < 8; ++k) {
      const __m512i qi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + chunk * k + 16 * v), inv));
      _mm_mask_storeu_epi8(q + chunk * k + 16 * v, m, _mm512_cvtepi32_epi8(qi));
      sum = _mm512_add_epi32(sum, qi);
    }
    const __m512i total = _mm512_castps_si512(per_block(_mm512_castsi512_ps(sum), [](__m512 a, __m512 b) {
      return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
    }));
    const __mmask16 firsts = static_cast<__mmask16>(m & 0x1111);  // lane 4j: block j's
    _mm512_mask_compressstoreu_ps(scales + 4 * v, firsts, _mm512_div_ps(amax, _mm512_set1_ps(127.f)));
    _mm512_mask_compressstoreu_epi32(sums + 4 * v, firsts, _mm512_mullo_epi32(total, _mm512_set1_epi32(-8)));
  }
}

// The turned prefill tile's parts (q4_rows_tokens, below): n (<= 16) 4-byte lanes of
// nibbles, n f16 scales as float bits, and one block's sums.
using q4_ivec = __m512i;
inline __m512i q4_lane_bytes(const uint8_t* p, int n) { return n == 16 ? _mm512_loadu_si512(p) : load_short(p, 4 * n); }
inline __m512i q4_scale_bits(const uint8_t* p, int n) {
  return _mm512_castps_si512(_mm512_cvtph_ps(n == 16
                                                 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                                 : _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << n) - 1), p)));
}
inline fbatch q4_bits_float(__m512i v) { return _mm512_castsi512_ps(v); }
inline fbatch q4_int_float(__m512i v) { return _mm512_cvtepi32_ps(v); }
inline void q4_nibbles(__m512i v, __m512i& lo, __m512i& hi) {
  lo = _mm512_and_si512(v, _mm512_set1_epi8(15));
  hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(15));
}
// The turned tile's shape: two blocks at a time against 2 tokens in flight, from 6 tokens
// (fewer take the row-wise tiles); each block meets every token before the next block.
inline constexpr bool kQ4TurnedTokensOuter = false;
inline constexpr int kQ4TurnedBlocks = 2;
inline constexpr int kQ4TurnedStep = 2;
inline constexpr int kQ4TurnedFrom = 6;
// Row tiles of W that share each token's broadcast in the turned tile: a broadcast load
// per vpdpbusd halves its rate (BM_int8_dot_peak<1> against <2>). One block of each
// tile at a time: the two tiles' 8 steps take the 16 registers that two blocks of one
// tile took.
inline constexpr int kQ4TurnedTiles = 2;
// One block of NT tokens against T tiles of W turned rows, their nibbles 4 per row lane:
// each row's exact int32 sum (tile u, token i: out[u * NT + i]), started at the token's
// -8 * sum(q). x[i]: token i's block columns at step 0; step s is `chunk` bytes further.
template <int NT, int T = 1>
[[gnu::always_inline]] inline void block_sums_q4(const __m512i* w, const int8_t* const* x, int chunk,
                                                 const int32_t* start, __m512i* out) {
  turned_block_sums<NT, T>(w, x, chunk, start, out);
}
#else  // AVX2 (and AVX-VNNI)
// Tile shapes: 2 rows for 1 or 2 tokens (16 registers: the sums, the float accumulators,
// a row's unpacked bytes). Decode of rows of 512 columns or more: one row from each of
// four streams (stream_blocks) side by side, each read in order, group by group, with no
// software prefetch: there the hardware prefetcher alone, over four streams, read more
// than two streams whose loads asked for the bytes ahead, and any such request added to
// four streams cost (bench/README.md, "AVX2 decode: four streams, no software
// prefetch"). Shorter rows, and prefill, keep linear_q4's burst per row block.
inline constexpr int kQ4Tokens = 2;
constexpr int q4_tile_rows(int) { return 2; }
inline constexpr int kQ4DecodeRows = 1, kQ4DecodeRowsFromCols = 512;
inline constexpr int kQ4DecodeStreams = 4, kQ4DecodeStreamsFromCols = 512;
inline constexpr long kQ4StreamStartBytes = 0;  // the hardware prefetcher's

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

// With VNNI the q4 kernels sum in int32 with dot4_q8 (vpdpbusd); without it they sum
// vpmaddubsw's int16 pairs over several steps before widening once.
#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
#define MOE_Q4_DPBUSD 1
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

// One group of g blocks of one token's activations quantized, as the AVX-512
// quantize_group_q4: each 128-bit lane of a step's vectors is one block's.
inline void quantize_group_q4(const float* x, int g, int8_t* q, float* scales, int32_t* sums) {
  const int chunk = 4 * g;
  const auto per_block = [](__m256 v, auto op) {  // op over each block's 4 lanes, in all 4
    v = op(v, _mm256_permute_ps(v, 0xb1));
    return op(v, _mm256_permute_ps(v, 0x4e));
  };
  for (int v = 0; v < chunk; v += 8) {
    const bool two = chunk - v >= 8;  // else one block left: the low lane
    const auto load = [&](int k) {
      const float* p = x + chunk * k + v;
      return two ? _mm256_loadu_ps(p) : _mm256_zextps128_ps256(_mm_loadu_ps(p));
    };
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 8; ++k)  // max(|x|, amax): a NaN is not kept (as the scalar quantizer)
      amax = _mm256_max_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), load(k)), amax);
    amax = per_block(amax, [](__m256 a, __m256 b) { return _mm256_max_ps(a, b); });
    const __m256 inv =
        _mm256_and_ps(_mm256_cmp_ps(amax, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_div_ps(_mm256_set1_ps(127.f), amax));
    __m256i sum = _mm256_setzero_si256();
    for (int k = 0; k < 8; ++k) {
      const __m256i qi = _mm256_cvtps_epi32(_mm256_mul_ps(load(k), inv));
      const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(qi, qi), _mm256_setzero_si256());
      const __m128i eight = _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1));
      int8_t* out = q + chunk * k + v;
      if (two) _mm_storel_epi64(reinterpret_cast<__m128i*>(out), eight);
      else __builtin_memcpy(out, &eight, 4);
      sum = _mm256_add_epi32(sum, qi);
    }
    const __m256i total = _mm256_castps_si256(per_block(_mm256_castsi256_ps(sum), [](__m256 a, __m256 b) {
      return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
    }));
    const __m256 scale = _mm256_div_ps(amax, _mm256_set1_ps(127.f));
    scales[v / 4] = _mm256_cvtss_f32(scale);
    sums[v / 4] = -8 * _mm256_cvtsi256_si32(total);
    if (two) {
      scales[v / 4 + 1] = _mm_cvtss_f32(_mm256_extractf128_ps(scale, 1));
      sums[v / 4 + 1] = -8 * _mm_cvtsi128_si32(_mm256_extracti128_si256(total, 1));
    }
  }
}

// The turned prefill tile's parts (q4_rows_tokens, below), as the AVX-512 ones: 8 lanes.
using q4_ivec = __m256i;
inline __m256i q4_lane_bytes(const uint8_t* p, int n) { return load_lanes(p, n); }
inline __m256i q4_scale_bits(const uint8_t* p, int n) { return _mm256_castps_si256(load_scales(p, n)); }
inline fbatch q4_bits_float(__m256i v) { return _mm256_castsi256_ps(v); }
inline fbatch q4_int_float(__m256i v) { return _mm256_cvtepi32_ps(v); }
inline void q4_nibbles(__m256i v, __m256i& lo, __m256i& hi) {
  lo = _mm256_and_si256(v, _mm256_set1_epi8(15));
  hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15));
}
// The turned tile's shape: two tiles of 8 rows share each token's broadcast, 4 tokens in
// flight, one chain each; each group of 4 tokens meets all of a slice's blocks, its
// accumulators in registers, before the next group (turned_slice_q4); from 4 tokens, where
// the row-wise tiles (2 tokens) would read the rows twice (bench/README.md, "Design
// decisions").
inline constexpr bool kQ4TurnedTokensOuter = true;
inline constexpr int kQ4TurnedBlocks = 1;  // the other loop order's (turned_blocks_q4): not taken here
inline constexpr int kQ4TurnedStep = 4;
inline constexpr int kQ4TurnedFrom = 4;
inline constexpr int kQ4TurnedTiles = 2;
// One block of NT tokens against T tiles of 8 turned rows (tile u's step s: w[8u + s];
// tile u, token i: out[u * NT + i]), as the AVX-512 block_sums_q4. Without VNNI the steps
// sum in int16 (8 * 2 * 15 * 127 = 30480 fits) and widen once.
template <int NT, int T = 1>
[[gnu::always_inline]] inline void block_sums_q4(const __m256i* w, const int8_t* const* x, int chunk,
                                                 const int32_t* start, __m256i* out) {
  constexpr int C = NT * T >= 2 ? 1 : 2;  // chains per token
  __m256i a[C][T][NT];
  MOE_UNROLL for (int c = 0; c < C; ++c) MOE_UNROLL for (int u = 0; u < T; ++u) MOE_UNROLL for (int i = 0; i < NT; ++i)
      a[c][u][i] = _mm256_setzero_si256();
  MOE_UNROLL for (int s = 0; s < 8; ++s) {
    __m256i wv[T];
    MOE_UNROLL for (int u = 0; u < T; ++u) wv[u] = w[u * 8 + s];
    MOE_UNROLL for (int i = 0; i < NT; ++i) {
      int32_t p;
      __builtin_memcpy(&p, x[i] + chunk * s, 4);
      const __m256i b = _mm256_set1_epi32(p);
      MOE_UNROLL for (int u = 0; u < T; ++u) {
#if MOE_Q4_DPBUSD
        a[s % C][u][i] = dot4_q8(a[s % C][u][i], wv[u], b);
#else
        a[s % C][u][i] = _mm256_add_epi16(a[s % C][u][i], _mm256_maddubs_epi16(wv[u], b));
        // Kept in order: GCC otherwise regroups the sums, issues all 8 * NT products first
        // and spills them.
        __asm__("" : "+x"(a[s % C][u][i]));
#endif
      }
    }
  }
  MOE_UNROLL for (int u = 0; u < T; ++u) MOE_UNROLL for (int i = 0; i < NT; ++i) {
#if MOE_Q4_DPBUSD
    const __m256i total = C == 2 ? _mm256_add_epi32(a[0][u][i], a[C - 1][u][i]) : a[0][u][i];
#else
    const __m256i pairs = C == 2 ? _mm256_add_epi16(a[0][u][i], a[C - 1][u][i]) : a[0][u][i];
    const __m256i total = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
#endif
    out[u * NT + i] = _mm256_add_epi32(_mm256_set1_epi32(start[i]), total);
  }
}

// One half of a group (blocks 8h .. 8h + n) of a tile: R rows at `offset` against NT
// tokens, added to acc (the AVX-512 tile_group_q4, 8 blocks at a time). kWhole: a whole
// group's half (n = 8, g = 16, known when compiled, so every load is a whole vector).
// Without VNNI each (row, token) adds its low and high nibbles' vpmaddubsw pairs before
// its int16 sum: the half's 8 chunks stay below 8 * 2 * 15 * 127 = 30480 before vpmaddwd
// widens them. With VNNI, two chains per (row, token) when the tile has fewer than 4.
// One row against one token (decode) is decode_group_q4's, below.
template <int R, int NT, bool kWhole>
[[gnu::always_inline]] inline void tile_half_q4(const uint8_t* const* rows, long offset, int g, int h, int cols,
                                                const int8_t* q, const float* xs, const int32_t* sums, long at,
                                                int base, __m256 (&acc)[R][NT]) {
  static_assert(R > 1, "tiles of one row are decode's: decode_group_q4");
  constexpr int C = MOE_Q4_DPBUSD && R * NT < 4 ? 2 : 1;
  if constexpr (kWhole) g = kQ4GroupBlocks;
  const int blocks = cols / kQ4Block, chunk = 4 * g, n = kWhole ? 8 : g - 8 * h < 8 ? g - 8 * h : 8;
  const __m256i low = _mm256_set1_epi8(15);
  __m256i isum[C][R][NT];
  MOE_UNROLL for (int k = 0; k < NT; ++k) {
#if MOE_Q4_DPBUSD
    const __m256i start = load_lanes(sums + static_cast<long>(k) * blocks + at + 8 * h, n);
#else
    const __m256i start = _mm256_setzero_si256();  // int16 pair sums: the block sums join after widening
#endif
    MOE_UNROLL for (int r = 0; r < R; ++r) {
      isum[0][r][k] = start;
      if constexpr (C == 2) isum[1][r][k] = _mm256_setzero_si256();
    }
  }
  MOE_UNROLL for (int p = 0; p < 4; ++p) {
    __m256i lo[R], hi[R];
    MOE_UNROLL for (int r = 0; r < R; ++r) {
      const __m256i v = load_lanes(rows[r] + offset + 2 * g + chunk * p + 32 * h, n);
      lo[r] = _mm256_and_si256(v, low);
      hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    }
    MOE_UNROLL for (int k = 0; k < NT; ++k) {
      const int8_t* x = q + static_cast<long>(k) * cols + base + 2 * chunk * p + 32 * h;
      __m256i x0 = load_lanes(x, n), x1 = load_lanes(x + chunk, n);
#if !MOE_Q4_DPBUSD
      // In registers for the tile's rows: GCC otherwise copies them to the stack and reads
      // each row's copy there.
      __asm__("" : "+x"(x0), "+x"(x1));
#endif
      MOE_UNROLL for (int r = 0; r < R; ++r) {
#if MOE_Q4_DPBUSD
        isum[0][r][k] = dot4_q8(isum[0][r][k], lo[r], x0);
        isum[C - 1][r][k] = dot4_q8(isum[C - 1][r][k], hi[r], x1);
#else
        isum[0][r][k] = _mm256_add_epi16(
            isum[0][r][k], _mm256_add_epi16(_mm256_maddubs_epi16(lo[r], x0), _mm256_maddubs_epi16(hi[r], x1)));
        __asm__("" : "+x"(isum[0][r][k]));  // in order, as block_sums_q4's
#endif
      }
    }
  }
  __m256 x_scale[NT];
  MOE_UNROLL for (int k = 0; k < NT; ++k) x_scale[k] =
      load_lanes_ps(xs + static_cast<long>(k) * blocks + at + 8 * h, n);
  MOE_UNROLL for (int r = 0; r < R; ++r) {
    const __m256 ws = load_scales(rows[r] + offset + 16 * h, n);
    MOE_UNROLL for (int k = 0; k < NT; ++k) {
#if MOE_Q4_DPBUSD
      const __m256i total = C == 2 ? _mm256_add_epi32(isum[0][r][k], isum[C - 1][r][k]) : isum[0][r][k];
#else
      const __m256i total = _mm256_add_epi32(load_lanes(sums + static_cast<long>(k) * blocks + at + 8 * h, n),
                                             _mm256_madd_epi16(isum[0][r][k], _mm256_set1_epi16(1)));
#endif
      acc[r][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(ws, x_scale[k]), acc[r][k]);
    }
  }
}

// Decode, one group of g blocks of each of R rows (one a stream) against one token,
// added to acc0[r] (blocks 0-7) and acc1[r] (blocks 8-15): the group's 4 steps of 4g
// bytes in address order, each step's two halves in their own sums, each half's x loaded
// once for the R rows. kWhole: g = 16, so every load is a whole vector. Written out
// rather than as tile_half_q4<R, 1>, where GCC kept the loaded bytes on the stack and
// reread them (bench/README.md, "Design decisions").
template <bool kWhole, int R>
[[gnu::always_inline]] inline void decode_group_q4(const uint8_t* const* groups, int g, const int8_t* x,
                                                   const float* xs, const int32_t* sums, __m256* acc0, __m256* acc1) {
  if constexpr (kWhole) g = kQ4GroupBlocks;
  const int chunk = 4 * g, n0 = g < 8 ? g : 8, n1 = g - n0;  // n1 > 0: a second half
  const __m256i low = _mm256_set1_epi8(15);
  const auto at = [&](const void* p, int n) {
    if constexpr (kWhole) return _mm256_loadu_si256(static_cast<const __m256i*>(p));
    else return load_lanes(p, n);
  };
  // With VNNI int32 sums, started at the blocks' -8 * sum(q); without, vpmaddubsw's int16
  // pairs (8 products of a half stay below 30480), widened and added to those at the end.
  __m256i s0[R], s1[R];
  MOE_UNROLL for (int r = 0; r < R; ++r) {
    s0[r] = MOE_Q4_DPBUSD ? at(sums, n0) : _mm256_setzero_si256();
    s1[r] = MOE_Q4_DPBUSD && n1 > 0 ? at(sums + 8, n1) : _mm256_setzero_si256();
  }
  // One half of a step: n lanes at `offset` past each row's nibbles, x at xp.
  const auto half = [&](long offset, const int8_t* xp, int n, __m256i* s) {
    const __m256i xl = at(xp, n), xh = at(xp + chunk, n);  // its low nibbles' columns, then its high nibbles'
    MOE_UNROLL for (int r = 0; r < R; ++r) {
      __m256i v = at(groups[r] + 2 * g + offset, n);
#if MOE_Q4_DPBUSD
      s[r] = dot4_q8(dot4_q8(s[r], _mm256_and_si256(v, low), xl), _mm256_and_si256(_mm256_srli_epi16(v, 4), low), xh);
#else
      // Each step's bytes loaded once, into a register: GCC otherwise loads them again as
      // the low nibbles' vpand operand (bench/README.md, "AVX2 decode on the Zen 3 VM").
      __asm__("" : "+x"(v));
      s[r] = _mm256_add_epi16(
          s[r], _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v, low), xl),
                                 _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), low), xh)));
#endif
    }
  };
  MOE_UNROLL for (int p = 0; p < 4; ++p) {
    const long step = static_cast<long>(chunk) * p;
    half(step, x + 2 * step, n0, s0);
    if (kWhole || n1 > 0) half(step + 32, x + 2 * step + 32, n1, s1);
#if !MOE_Q4_DPBUSD
    // step by step: GCC otherwise hoists the loads and spills
    MOE_UNROLL for (int r = 0; r < R; ++r) __asm__("" : "+x"(s0[r]), "+x"(s1[r]));
#endif
  }
  // A half's sums, scaled by its row's block scales and the token's, into acc.
  const auto finish = [&](int h, int n, const __m256i* s, __m256* acc) {
    const __m256 token_scales = kWhole ? _mm256_loadu_ps(xs + 8 * h) : load_lanes_ps(xs + 8 * h, n);
    [[maybe_unused]] const __m256i offsets = MOE_Q4_DPBUSD ? _mm256_setzero_si256() : at(sums + 8 * h, n);
    MOE_UNROLL for (int r = 0; r < R; ++r) {
#if MOE_Q4_DPBUSD
      const __m256i total = s[r];
#else
      const __m256i total = _mm256_add_epi32(offsets, _mm256_madd_epi16(s[r], _mm256_set1_epi16(1)));
#endif
      const __m256 ws = kWhole ? load_scales(groups[r] + 16 * h, 8) : load_scales(groups[r] + 16 * h, n);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(ws, token_scales), acc[r]);
    }
  };
  finish(0, n0, s0, acc0);
  if (kWhole || n1 > 0) finish(1, n1, s1, acc1);
}

// A tile: R rows against NT tokens; out[k * out_stride + r] gets lanes whose sum is row
// r's result for token k (as the AVX-512 tile_q4). One row against one token, or one row
// of each decode stream (kStreams): decode_group_q4, group by group, the streams' groups
// in turn.
template <int R, int NT, bool kStreams = false>
[[gnu::always_inline]] inline void tile_q4(const uint8_t* const* rows, int cols, const int8_t* q, const float* xs,
                                           const int32_t* sums, fbatch* out, int out_stride) {
  const int blocks = cols / kQ4Block;
  if constexpr (NT == 1 && (R == 1 || kStreams)) {
    const int whole_groups = blocks / kQ4GroupBlocks;
    constexpr long group_bytes = kQ4GroupBlocks * kQ4BlockBytes;
    constexpr int group_cols = kQ4GroupBlocks * kQ4Block;
    __m256 acc0[R], acc1[R];
    MOE_UNROLL for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
    const uint8_t* groups[R];
    for (int gi = 0; gi < whole_groups; ++gi) {
      MOE_UNROLL for (int r = 0; r < R; ++r) groups[r] = rows[r] + gi * group_bytes;
      decode_group_q4<true, R>(groups, kQ4GroupBlocks, q + gi * group_cols, xs + gi * kQ4GroupBlocks,
                               sums + gi * kQ4GroupBlocks, acc0, acc1);
    }
    if (const int g = blocks - whole_groups * kQ4GroupBlocks; g > 0) {
      MOE_UNROLL for (int r = 0; r < R; ++r) groups[r] = rows[r] + whole_groups * group_bytes;
      decode_group_q4<false, R>(groups, g, q + whole_groups * group_cols, xs + whole_groups * kQ4GroupBlocks,
                                sums + whole_groups * kQ4GroupBlocks, acc0, acc1);
    }
    MOE_UNROLL for (int r = 0; r < R; ++r) out[r] = _mm256_add_ps(acc0[r], acc1[r]);
  } else {
    __m256 acc[R][NT];
    MOE_UNROLL for (int r = 0; r < R; ++r) MOE_UNROLL for (int k = 0; k < NT; ++k) acc[r][k] = _mm256_setzero_ps();
    long offset = 0;
    for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
      const int g = q4_group_blocks(blocks, gi), base = gi * kQ4GroupBlocks * kQ4Block;
      const long at = gi * kQ4GroupBlocks;
      if (g == kQ4GroupBlocks)
        MOE_UNROLL for (int h = 0; h < 2; ++h)
            tile_half_q4<R, NT, true>(rows, offset, g, h, cols, q, xs, sums, at, base, acc);
      else
        for (int h = 0; h * 8 < g; ++h)
          tile_half_q4<R, NT, false>(rows, offset, g, h, cols, q, xs, sums, at, base, acc);
      offset += g * kQ4BlockBytes;
    }
    MOE_UNROLL for (int r = 0; r < R; ++r) MOE_UNROLL for (int k = 0; k < NT; ++k) out[k * out_stride + r] = acc[r][k];
  }
}
#endif

// Prefill, rows [r, r + W) for tokens [t0, t1) (at most kQ4TurnedTokens) of y = W x: the
// int8 turned tile (q8_rows_tokens) for q4. A row's chunk already has one block per
// 4-byte lane, so the W rows' chunks turned (rows_to_lanes) give, per block, W rows in
// lanes; each token's 4 columns of a step are broadcast against them. A block's 8 steps
// sum in int32 for W rows before one convert and one multiply-add by (the W rows' block
// scales x the token's), where the row-wise tile needs both per row; the results are
// whole lanes (no horizontal sums), and a short group costs what its blocks do. The
// slice of a group turned at once is W blocks; its nibbles wait, turned and packed, in
// `packed` while every token meets them, kQ4TurnedBlocks blocks against kQ4TurnedChunk
// tokens at a time (or, with kQ4TurnedTiles tiles turned side by side, one block of
// each, so that each broadcast meets every tile). Where kQ4TurnedTokensOuter, the loops
// go the other way round (turned_slice_q4).
inline constexpr int kQ4TurnedTokens = 64;
inline constexpr int kQ4TurnedChunk = 16;  // tokens that meet a slice's blocks before the next ones

// B blocks of each of T tiles (tile u: packed[u][0..3][j..j + B), scales ws[u][j..j + B),
// accumulators acc[u * kQ4TurnedTokens + k]; B * T <= 2) against n tokens: token k's
// block columns at x + k * cols, its block sums and scales at sums / scales + k * blocks.
template <int B, int T>
[[gnu::always_inline]] inline void turned_blocks_q4(const q4_ivec (*packed)[4][W], const fbatch (*ws)[W], int j,
                                                    int chunk, const int8_t* x, const int32_t* sums,
                                                    const float* scales, long cols, long blocks, int n, fbatch* acc) {
  static_assert(B == 1 || T == 1);
  constexpr int NT = kQ4TurnedStep;
  q4_ivec w[T][B][8];
  MOE_UNROLL for (int u = 0; u < T; ++u) MOE_UNROLL for (int b = 0; b < B; ++b) MOE_UNROLL for (int p = 0; p < 4; ++p)
      q4_nibbles(packed[u][p][j + b], w[u][b][2 * p], w[u][b][2 * p + 1]);
  const auto step = [&]<int N>(std::integral_constant<int, N>, int k) {
    MOE_UNROLL for (int b = 0; b < B; ++b) {
      const int8_t* xp[N];
      int32_t start[N];
      MOE_UNROLL for (int i = 0; i < N; ++i) {
        xp[i] = x + i * cols + 4 * b;
        start[i] = sums[i * blocks + b];
      }
      q4_ivec d[T * N];
      block_sums_q4<N, T>(w[0][b], xp, chunk, start, d);
      MOE_UNROLL for (int i = 0; i < N; ++i) {
        const fbatch scale(scales[i * blocks + b]);
        MOE_UNROLL for (int u = 0; u < T; ++u) acc[u * kQ4TurnedTokens + k + i] =
            xsimd::fma(q4_int_float(d[u * N + i]), ws[u][j + b] * scale, acc[u * kQ4TurnedTokens + k + i]);
      }
    }
  };
  int k = 0;
  for (; k + NT <= n; k += NT, x += NT * cols, sums += NT * blocks, scales += NT * blocks)
    step(std::integral_constant<int, NT>{}, k);
  if constexpr (NT > 2)
    for (; k + 2 <= n; k += 2, x += 2 * cols, sums += 2 * blocks, scales += 2 * blocks)
      step(std::integral_constant<int, 2>{}, k);
  for (; k < n; ++k, x += cols, sums += blocks, scales += blocks) step(std::integral_constant<int, 1>{}, k);
}

// The slice's nb blocks of T tiles (as turned_blocks_q4's) against n tokens, the other
// way round: its nibbles unpacked once, then each group of kQ4TurnedStep tokens meets
// every block, its T * kQ4TurnedStep accumulators in registers from the first block to
// the last. x, sums, scales: token 0's first block of the slice.
template <int T>
[[gnu::always_inline]] inline void turned_slice_q4(const q4_ivec (*packed)[4][W], const fbatch (*ws)[W], int nb,
                                                   int chunk, const int8_t* x, const int32_t* sums, const float* scales,
                                                   long cols, long blocks, int n, fbatch* acc) {
  q4_ivec w[W][T][8];  // block j, tile u, step s
  for (int j = 0; j < nb; ++j)
    MOE_UNROLL for (int u = 0; u < T; ++u) MOE_UNROLL for (int p = 0; p < 4; ++p)
        q4_nibbles(packed[u][p][j], w[j][u][2 * p], w[j][u][2 * p + 1]);
  const auto step = [&]<int N>(std::integral_constant<int, N>, int k) {
    fbatch sum[T][N];
    const int8_t* xp[N];
    MOE_UNROLL for (int i = 0; i < N; ++i) {
      MOE_UNROLL for (int u = 0; u < T; ++u) sum[u][i] = acc[u * kQ4TurnedTokens + k + i];
      xp[i] = x + (k + i) * cols;
    }
    const int32_t* token_sums = sums + k * blocks;
    const float* token_scales = scales + k * blocks;
    for (int j = 0; j < nb; ++j) {
      int32_t start[N];
      MOE_UNROLL for (int i = 0; i < N; ++i) start[i] = token_sums[i * blocks + j];
      q4_ivec d[T * N];
      block_sums_q4<N, T>(w[j][0], xp, chunk, start, d);
      MOE_UNROLL for (int i = 0; i < N; ++i) {
        const fbatch scale(token_scales[i * blocks + j]);
        MOE_UNROLL for (int u = 0; u < T; ++u) sum[u][i] =
            xsimd::fma(q4_int_float(d[u * N + i]), ws[u][j] * scale, sum[u][i]);
        xp[i] += 4;
      }
    }
    MOE_UNROLL for (int i = 0; i < N; ++i) MOE_UNROLL for (int u = 0; u < T; ++u) acc[u * kQ4TurnedTokens + k + i] =
        sum[u][i];
  };
  constexpr int NT = kQ4TurnedStep;
  int k = 0;
  for (; k + NT <= n; k += NT) step(std::integral_constant<int, NT>{}, k);
  if constexpr (NT > 2)
    for (; k + 2 <= n; k += 2) step(std::integral_constant<int, 2>{}, k);
  for (; k < n; ++k) step(std::integral_constant<int, 1>{}, k);
}

// Rows [r, r + T W) (T tiles of W rows) for tokens [t0, t1).
template <int T>
inline void q4_rows_tokens(const Matrix& m, const ActQ4& a, int r, int t0, int t1, float* y) {
  const int cols = m.cols, blocks = cols / kQ4Block, n = t1 - t0;
  const uint8_t* rows[T * W];
#pragma GCC unroll 32
  for (int j = 0; j < T * W; ++j) rows[j] = m.q4_row(r + j);
  fbatch acc[T * kQ4TurnedTokens];
  for (int u = 0; u < T; ++u)
    for (int k = 0; k < n; ++k) acc[u * kQ4TurnedTokens + k] = fbatch(0.f);
  const long row_bytes = static_cast<long>(blocks) * kQ4BlockBytes;
  long offset = 0;  // the group's bytes within a row
  for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
    const int g = q4_group_blocks(blocks, gi), chunk = 4 * g, base = gi * kQ4GroupBlocks * kQ4Block;
    const long group_bytes = static_cast<long>(g) * kQ4BlockBytes;
    for (int first = 0; first < g; first += W) {  // a slice of blocks [first, first + nb)
      const int nb = g - first < W ? g - first : W;
      q4_ivec v[W], packed[T][4][W];
      fbatch ws[T][W];
      MOE_UNROLL for (int u = 0; u < T; ++u) {
        const uint8_t* const* tile = rows + u * W;
#pragma GCC unroll 16
        for (int j = 0; j < W; ++j) v[j] = q4_scale_bits(tile[j] + offset + 2 * first, nb);
        rows_to_lanes(v);
#pragma GCC unroll 16
        for (int j = 0; j < W; ++j) ws[u][j] = q4_bits_float(v[j]);
        MOE_UNROLL for (int p = 0; p < 4; ++p) {
#pragma GCC unroll 16
          for (int j = 0; j < W; ++j) {
            const uint8_t* src = tile[j] + offset + 2 * g + chunk * p + 4 * first;
            prefetch(src + kQ8PrefetchTiles * T * W * row_bytes);
            v[j] = q4_lane_bytes(src, nb);
          }
          rows_to_lanes(v);
#pragma GCC unroll 16
          for (int j = 0; j < W; ++j) packed[u][p][j] = v[j];
        }
      }
      if constexpr (kQ4TurnedTokensOuter) {
        const long at = static_cast<long>(t0) * blocks + gi * kQ4GroupBlocks + first;
        turned_slice_q4<T>(packed, ws, nb, chunk, a.q + static_cast<long>(t0) * cols + base + 4 * first, a.sums + at,
                           a.scales + at, cols, blocks, n, acc);
      } else {
        for (int k0 = 0; k0 < n; k0 += kQ4TurnedChunk) {  // the chunk's x stays in L1 over the slice
          const int nk = n - k0 < kQ4TurnedChunk ? n - k0 : kQ4TurnedChunk;
          constexpr int step = T > 1 ? 1 : kQ4TurnedBlocks;
          for (int j = 0; j < nb; j += step) {
            const long at = static_cast<long>(t0 + k0) * blocks + gi * kQ4GroupBlocks + first + j;
            const int8_t* x = a.q + static_cast<long>(t0 + k0) * cols + base + 4 * (first + j);
            if (step == 2 && nb - j >= 2)
              turned_blocks_q4<2, 1>(packed, ws, j, chunk, x, a.sums + at, a.scales + at, cols, blocks, nk, acc + k0);
            else
              turned_blocks_q4<1, T>(packed, ws, j, chunk, x, a.sums + at, a.scales + at, cols, blocks, nk, acc + k0);
          }
        }
      }
    }
    offset += group_bytes;
  }
  for (int u = 0; u < T; ++u)
    for (int k = 0; k < n; ++k)
      acc[u * kQ4TurnedTokens + k].store_unaligned(y + static_cast<long>(t0 + k) * m.rows + r + u * W);
}

}  // namespace moe::kernels::simd
