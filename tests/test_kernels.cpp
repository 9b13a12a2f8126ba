// Every kernel: the scalar reference against an independent computation (double
// precision, or the hardware's own conversion), and the SIMD version against the
// scalar reference, over sizes that hit every tail case of every vector width.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "moe/crc32c.hpp"
#include "moe/fp16.hpp"
#include "moe/kernels/activation.hpp"
#include "moe/kernels/attention.hpp"
#include "moe/kernels/linear.hpp"
#include "moe/kernels/linear_q4.hpp"
#include "moe/kernels/linear_q8.hpp"
#include "moe/kernels/norm.hpp"
#include "moe/kernels/rope.hpp"
#include "moe/kernels/softmax.hpp"
#include "moe/kernels/topk.hpp"

namespace moe {
namespace {

using kernels::Scalar;

const int kSizes[] = {1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 128, 129, 257, 512};

std::vector<float> random_vector(int n, std::mt19937& rng, float scale = 1.f) {
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// |a - b| <= tol * (scale + |b|): relative to the magnitudes that went into the result.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, double scale,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_LE(std::fabs(static_cast<double>(got[i]) - want[i]), tol * (scale + std::fabs(static_cast<double>(want[i]))))
        << what << " element " << i << ": got " << got[i] << ", want " << want[i];
}

// A weight matrix in one dtype, plus the exact f32 values the engine must compute with.
struct TestMatrix {
  std::vector<uint8_t> storage;
  std::vector<float> scales;
  std::vector<float> values;  // dequantized, row-major
  Matrix m;
};

TestMatrix make_matrix(int rows, int cols, DType dtype, int group, std::mt19937& rng) {
  TestMatrix t;
  const std::vector<float> w = random_vector(rows * cols, rng, 0.5f);
  t.values.resize(w.size());
  t.m.dtype = dtype;
  t.m.rows = rows;
  t.m.cols = cols;
  if (dtype == DType::f32) {
    t.storage.resize(w.size() * 4);
    std::memcpy(t.storage.data(), w.data(), t.storage.size());
    t.values = w;
  } else if (dtype == DType::f16) {
    t.storage.resize(w.size() * 2);
    auto* h = reinterpret_cast<uint16_t*>(t.storage.data());
    for (size_t i = 0; i < w.size(); ++i) {
      h[i] = float_to_half(w[i]);
      t.values[i] = half_to_float(h[i]);
    }
  } else if (dtype == DType::q4) {
    // Every nibble (0 = -8 included) and scales of both signs; values as the layout
    // defines them (tensor.hpp's reference).
    t.m.group_size = kQ4Block;
    t.storage.resize(data_bytes(dtype, w.size()));
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> s(-0.05f, 0.05f);
    const int blocks = cols / kQ4Block;
    for (int r = 0; r < rows; ++r) {
      uint8_t* group = t.storage.data() + static_cast<size_t>(r) * blocks * kQ4BlockBytes;
      for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
        const int g = q4_group_blocks(blocks, gi);
        for (int j = 0; j < g; ++j) {
          const uint16_t h = float_to_half(s(rng));
          group[2 * j] = static_cast<uint8_t>(h & 0xff), group[2 * j + 1] = static_cast<uint8_t>(h >> 8);
        }
        for (int i = 0; i < 16 * g; ++i) group[2 * g + i] = static_cast<uint8_t>(byte(rng));
        dequantize_q4_group(group, g, t.values.data() + static_cast<size_t>(r) * cols + gi * kQ4GroupBlocks * kQ4Block);
        group += g * kQ4BlockBytes;
      }
    }
  } else {
    t.m.group_size = group;
    t.storage.resize(w.size());
    const int groups = cols / group;
    t.scales.resize(static_cast<size_t>(rows * groups));
    std::uniform_int_distribution<int> q(-127, 127);
    std::uniform_real_distribution<float> s(0.001f, 0.02f);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const size_t i = static_cast<size_t>(r * cols + c);
        if (c % group == 0) t.scales[static_cast<size_t>(r * groups + c / group)] = s(rng);
        const auto v = static_cast<int8_t>(q(rng));
        t.storage[i] = static_cast<uint8_t>(v);
        t.values[i] = static_cast<float>(v) * t.scales[static_cast<size_t>(r * groups + c / group)];
      }
    t.m.scales = t.scales.data();
  }
  t.m.data = t.storage.data();
  return t;
}

// ---- encodings and checksums ----------------------------------------------------------

TEST(Fp16, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(half_to_float(float_to_half(f))));
      continue;
    }
    ASSERT_EQ(float_to_half(f), h) << "half 0x" << std::hex << h;
  }
}

TEST(Fp16, HalfToFloatIsExact) {
  // Independent definition: value = (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024.
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const int e = static_cast<int>(h >> 10), m = static_cast<int>(h & 0x3ff);
    const double want = e == 0 ? std::ldexp(m / 1024.0, -14) : std::ldexp(1.0 + m / 1024.0, e - 15);
    ASSERT_EQ(static_cast<double>(half_to_float(static_cast<uint16_t>(h))), want) << h;
    ASSERT_EQ(static_cast<double>(half_to_float(static_cast<uint16_t>(h | 0x8000))), -want) << h;
  }
  EXPECT_TRUE(std::isinf(half_to_float(0x7c00)));
}

TEST(Fp16, FloatToHalfRoundsToNearestEven) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const float f = f32_from_bits(bits(rng));
    if (!std::isfinite(f)) continue;
    const uint16_t h = float_to_half(f);
    if (std::fabs(f) > 65520.f) {
      EXPECT_EQ(h & 0x7fff, 0x7c00);
      continue;
    }
    // The result is the nearest half; on a tie, the even one.
    const double v = half_to_float(h);
    const double next_up = half_to_float(static_cast<uint16_t>(h + 1)),
                 next_down = (h & 0x7fff) ? half_to_float(static_cast<uint16_t>(h - 1)) : -v;
    const double err = std::fabs(v - f);
    ASSERT_LE(err, std::fabs(next_up - f)) << f;
    ASSERT_LE(err, std::fabs(next_down - f) + 1e-300) << f;
  }
#if defined(__F16C__)
  // And bit-identical to the hardware's conversion.
  for (int i = 0; i < 200000; ++i) {
    const float f = f32_from_bits(bits(rng));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_half(f), _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)) << f;
  }
#endif
}

TEST(Crc32c, KnownVectorsAndIncrementalUpdate) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the standard check value of CRC-32C
  EXPECT_EQ(crc32c("", 0), 0u);
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
  std::mt19937 rng(1);
  std::vector<uint8_t> data(1000);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  for (size_t split : {0u, 1u, 7u, 8u, 9u, 500u, 999u, 1000u})
    EXPECT_EQ(crc32c_update(crc32c(data.data(), split), data.data() + split, data.size() - split),
              crc32c(data.data(), data.size()));
}

// ---- scalar references against double precision ---------------------------------------

TEST(ScalarKernels, LinearMatchesDoublePrecision) {
  std::mt19937 rng(2);
  for (DType dtype : {DType::f32, DType::f16, DType::i8, DType::q4}) {
    for (int cols : {16, 64, 96}) {
      if (dtype == DType::q4 && cols % kQ4Block != 0) continue;
      const int rows = 5, n = 3;
      TestMatrix t = make_matrix(rows, cols, dtype, 16, rng);
      const std::vector<float> x = random_vector(n * cols, rng);
      std::vector<float> y(static_cast<size_t>(n * rows)), want(y.size());
      kernels::linear(Scalar{}, t.m, x.data(), n, y.data());
      double scale = 0;
      for (int tk = 0; tk < n; ++tk)
        for (int r = 0; r < rows; ++r) {
          double s = 0;
          for (int c = 0; c < cols; ++c) {
            s += static_cast<double>(t.values[static_cast<size_t>(r * cols + c)]) *
                 x[static_cast<size_t>(tk * cols + c)];
            scale = std::max(scale, std::fabs(static_cast<double>(t.values[static_cast<size_t>(r * cols + c)]) *
                                              x[static_cast<size_t>(tk * cols + c)]));
          }
          want[static_cast<size_t>(tk * rows + r)] = static_cast<float>(s);
        }
      expect_close(y, want, 1e-5 * cols, scale, dtype_name(dtype));
    }
  }
}

TEST(ScalarKernels, NormsMatchDoublePrecision) {
  std::mt19937 rng(3);
  for (int n : {8, 32, 100}) {
    const auto x = random_vector(n, rng, 2.f), w = random_vector(n, rng), b = random_vector(n, rng);
    std::vector<float> out(static_cast<size_t>(n)), want(static_cast<size_t>(n));
    double ss = 0, mean = 0, var = 0;
    for (float v : x) ss += static_cast<double>(v) * v, mean += v;
    mean /= n;
    for (float v : x) var += (v - mean) * (v - mean);
    var /= n;
    kernels::rmsnorm(Scalar{}, x.data(), w.data(), n, 1e-5f, out.data());
    for (int i = 0; i < n; ++i)
      want[static_cast<size_t>(i)] =
          static_cast<float>(x[static_cast<size_t>(i)] / std::sqrt(ss / n + 1e-5) * w[static_cast<size_t>(i)]);
    expect_close(out, want, 1e-5, 1.0, "rmsnorm");
    kernels::layernorm(Scalar{}, x.data(), w.data(), b.data(), n, 1e-5f, out.data());
    for (int i = 0; i < n; ++i)
      want[static_cast<size_t>(i)] =
          static_cast<float>((x[static_cast<size_t>(i)] - mean) / std::sqrt(var + 1e-5) * w[static_cast<size_t>(i)] +
                             b[static_cast<size_t>(i)]);
    expect_close(out, want, 1e-5, 1.0, "layernorm");
  }
}

TEST(ScalarKernels, SoftmaxTopkAttentionRopeMatchDefinitions) {
  std::mt19937 rng(4);
  // softmax
  auto x = random_vector(37, rng, 3.f);
  std::vector<float> sm = x;
  kernels::softmax(Scalar{}, sm.data(), 37);
  double z = 0;
  for (float v : x) z += std::exp(static_cast<double>(v));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(sm[i], std::exp(static_cast<double>(x[i])) / z, 1e-6);
  // top-k against a full sort (ties: lower index first)
  std::vector<float> logits = {0.5f, 2.f, -1.f, 2.f, 0.f, 3.f, 2.f, -4.f};
  int idx[4];
  float val[4];
  kernels::topk(Scalar{}, logits.data(), 8, 4, idx, val);
  EXPECT_EQ(std::vector<int>(idx, idx + 4), (std::vector<int>{5, 1, 3, 6}));
  EXPECT_EQ(std::vector<float>(val, val + 4), (std::vector<float>{3.f, 2.f, 2.f, 2.f}));
  // RoPE rotates each (i, i + d/2) pair by pos * theta^(-2i/d): norms are kept, angle matches.
  const int hd = 8;
  std::vector<float> cosv(hd / 2), sinv(hd / 2);
  kernels::rope_angles(5, hd, 10000.f, cosv.data(), sinv.data());
  auto q = random_vector(2 * hd, rng);
  auto q0 = q;
  kernels::rope(Scalar{}, q.data(), 2, hd, cosv.data(), sinv.data());
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < hd / 2; ++i) {
      const double a = q0[static_cast<size_t>(h * hd + i)], b = q0[static_cast<size_t>(h * hd + i + hd / 2)];
      const double angle = 5.0 * std::pow(10000.0, -2.0 * i / hd);
      EXPECT_NEAR(q[static_cast<size_t>(h * hd + i)], a * std::cos(angle) - b * std::sin(angle), 1e-5);
      EXPECT_NEAR(q[static_cast<size_t>(h * hd + i + hd / 2)], b * std::cos(angle) + a * std::sin(angle), 1e-5);
    }
  // attention over 6 positions
  const int n_pos = 6;
  auto keys = random_vector(n_pos * hd, rng), values = random_vector(n_pos * hd, rng), query = random_vector(hd, rng);
  std::vector<float> scores(static_cast<size_t>(n_pos)), out(static_cast<size_t>(hd));
  kernels::attention(Scalar{}, query.data(), keys.data(), values.data(), n_pos, hd, 0.3f, scores.data(), out.data());
  std::vector<double> p(static_cast<size_t>(n_pos));
  double total = 0;
  for (int t = 0; t < n_pos; ++t) {
    double s = 0;
    for (int i = 0; i < hd; ++i)
      s += static_cast<double>(query[static_cast<size_t>(i)]) * keys[static_cast<size_t>(t * hd + i)];
    p[static_cast<size_t>(t)] = std::exp(0.3 * s);
    total += p[static_cast<size_t>(t)];
  }
  for (int i = 0; i < hd; ++i) {
    double want = 0;
    for (int t = 0; t < n_pos; ++t) want += p[static_cast<size_t>(t)] / total * values[static_cast<size_t>(t * hd + i)];
    EXPECT_NEAR(out[static_cast<size_t>(i)], want, 1e-5);
  }
}

// ---- int8 x int8 (the integer dot-product path) ------------------------------------------

TEST(Int8Activations, QuantizationErrorIsAtMostHalfAStep) {
  std::mt19937 rng(21);
  const int n = 3, cols = 96;
  auto x = random_vector(n * cols, rng, 3.f);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(32 + i)] = 0.f;  // an all-zero block
  std::vector<int8_t> q(x.size());
  std::vector<float> s(static_cast<size_t>(n * cols / kernels::kActBlock));
  kernels::quantize_activations(Scalar{}, x.data(), n, cols, q.data(), s.data());
  EXPECT_EQ(s[1], 0.f);
  for (size_t i = 0; i < x.size(); ++i) {
    const float scale = s[i / kernels::kActBlock];
    EXPECT_LE(std::fabs(q[i] * scale - x[i]), scale * 0.5f + 1e-6f) << i;
  }
}

// linear_q8 equals the product of the dequantized operands: the integer sums are exact.
TEST(Int8Activations, LinearQ8EqualsDequantizedProduct) {
  std::mt19937 rng(22);
  for (int group : {64, 32, 128}) {
    const int rows = 9, cols = 128, n = 3;
    TestMatrix t = make_matrix(rows, cols, DType::i8, group, rng);
    ASSERT_TRUE(kernels::q8_eligible(t.m));
    const auto x = random_vector(n * cols, rng);
    std::vector<int8_t> q(x.size());
    std::vector<float> s(static_cast<size_t>(n * cols / kernels::kActBlock)), y(static_cast<size_t>(n * rows));
    kernels::quantize_activations(Scalar{}, x.data(), n, cols, q.data(), s.data());
    kernels::linear_q8(Scalar{}, t.m, q.data(), s.data(), n, y.data());
    for (int tk = 0; tk < n; ++tk)
      for (int r = 0; r < rows; ++r) {
        double want = 0;
        for (int c = 0; c < cols; ++c)
          want += static_cast<double>(t.values[static_cast<size_t>(r * cols + c)]) *
                  q[static_cast<size_t>(tk * cols + c)] * s[static_cast<size_t>((tk * cols + c) / kernels::kActBlock)];
        EXPECT_NEAR(y[static_cast<size_t>(tk * rows + r)], want, 1e-5 * (1 + std::fabs(want))) << "group " << group;
      }
  }
  TestMatrix odd = make_matrix(2, 48, DType::i8, 16, rng);
  EXPECT_FALSE(kernels::q8_eligible(odd.m));  // 48 columns are not whole blocks
}

// The q4 layout by hand (tensor.hpp): in a group of g blocks, column c is chunk c / 4g
// and block (c % 4g) / 4; chunk pairs share bytes, the even chunk in the low nibble.
TEST(Int4Weights, LayoutByHand) {
  const int g = 2;  // a 64-column row: one group of two blocks, chunks of 8 columns
  uint8_t group[2 * kQ4BlockBytes] = {};
  const uint16_t one = float_to_half(1.f), half = float_to_half(0.5f);
  group[0] = static_cast<uint8_t>(one & 0xff), group[1] = static_cast<uint8_t>(one >> 8);    // block 0: scale 1
  group[2] = static_cast<uint8_t>(half & 0xff), group[3] = static_cast<uint8_t>(half >> 8);  // block 1: scale 0.5
  uint8_t* nibbles = group + 2 * g;
  for (int i = 0; i < 16 * g; ++i) nibbles[i] = 0x88;  // all zero
  nibbles[0] = 0x9a;      // column 0 (chunk 0, block 0): 10 - 8 = 2; column 8 (chunk 1, block 0): 9 - 8 = 1
  nibbles[8 + 5] = 0x08;  // pair 1 byte 5 = column 16 + 5 (chunk 2, block 1): 0; column 24 + 5 (chunk 3, block 1): -8
  float v[64];
  dequantize_q4_group(group, g, v);
  EXPECT_EQ(v[0], 2.f);
  EXPECT_EQ(v[8], 1.f);
  EXPECT_EQ(v[21], 0.f);
  EXPECT_EQ(v[29], -4.f);
  for (int c : {1, 4, 9, 20, 63}) EXPECT_EQ(v[c], 0.f) << c;
}

// linear_q4 (int4 x int8) equals the product of the dequantized operands (the integer
// sums are exact), and the f32-activation path (dot_q4) the dequantized weights times x.
// 800 columns: a whole group of 16 blocks and a last one of 9.
TEST(Int4Weights, LinearQ4EqualsDequantizedProduct) {
  std::mt19937 rng(25);
  const int rows = 9, cols = 800, n = 5;
  TestMatrix t = make_matrix(rows, cols, DType::q4, 0, rng);
  const auto x = random_vector(n * cols, rng);
  std::vector<int8_t> q(x.size());
  std::vector<float> s(static_cast<size_t>(n * cols / kQ4Block)), y(static_cast<size_t>(n * rows)), yf(y.size());
  std::vector<int32_t> sums(s.size());
  kernels::quantize_activations_q4(Scalar{}, x.data(), n, cols, q.data(), s.data(), sums.data());
  kernels::linear_q4(Scalar{}, t.m, kernels::ActQ4{q.data(), s.data(), sums.data()}, n, y.data());
  kernels::linear(Scalar{}, t.m, x.data(), n, yf.data());
  // The activation blocks are q4's: column c's scale is its block's.
  std::vector<float> xq(x.size());
  for (int tk = 0; tk < n; ++tk)
    for (int gi = 0; gi * 16 < cols / 32; ++gi) {
      const int g = q4_group_blocks(cols / 32, gi);
      for (int c = 0; c < 32 * g; ++c) {
        const size_t at = static_cast<size_t>(tk * cols + gi * 512 + c);
        const size_t block = static_cast<size_t>(tk * (cols / 32) + gi * 16 + (c % (4 * g)) / 4);
        xq[at] = q[at] * s[block];
        EXPECT_LE(std::fabs(xq[at] - x[at]), s[block] * 0.5f + 1e-6f);
      }
    }
  for (int tk = 0; tk < n; ++tk)
    for (int r = 0; r < rows; ++r) {
      double want = 0, want_f = 0;
      for (int c = 0; c < cols; ++c) {
        const double w = t.values[static_cast<size_t>(r * cols + c)];
        want += w * xq[static_cast<size_t>(tk * cols + c)];
        want_f += w * x[static_cast<size_t>(tk * cols + c)];
      }
      EXPECT_NEAR(y[static_cast<size_t>(tk * rows + r)], want, 1e-5 * (1 + std::fabs(want)));
      EXPECT_NEAR(yf[static_cast<size_t>(tk * rows + r)], want_f, 1e-5 * (1 + std::fabs(want_f)));
    }
  std::vector<float> row(static_cast<size_t>(cols));
  dequantize_row(t.m, 3, row.data());
  EXPECT_TRUE(std::equal(row.begin(), row.end(), t.values.begin() + 3 * cols));
}

// ---- SIMD == scalar --------------------------------------------------------------------
#if MOE_SIMD
using kernels::Simd;

TEST(SimdEqualsScalar, WidenedLoadsAreExact) {
  std::vector<int8_t> q(256);
  for (int i = 0; i < 256; ++i) q[static_cast<size_t>(i)] = static_cast<int8_t>(i - 128);
  std::vector<uint16_t> h(65536);
  for (uint32_t i = 0; i < 65536; ++i) h[i] = static_cast<uint16_t>(i);
  alignas(64) float lanes[kernels::simd::W];
  for (int i = 0; i + kernels::simd::W <= 256; i += kernels::simd::W) {
    kernels::simd::load(q.data() + i).store_aligned(lanes);
    for (int l = 0; l < kernels::simd::W; ++l) ASSERT_EQ(lanes[l], static_cast<float>(q[static_cast<size_t>(i + l)]));
  }
  for (int i = 0; i + kernels::simd::W <= 65536; i += kernels::simd::W) {
    kernels::simd::load(h.data() + i).store_aligned(lanes);
    for (int l = 0; l < kernels::simd::W; ++l) {
      const float want = half_to_float(h[static_cast<size_t>(i + l)]);
      if (std::isnan(want)) ASSERT_TRUE(std::isnan(lanes[l]));
      else ASSERT_EQ(lanes[l], want) << "half " << i + l;
    }
  }
}

TEST(SimdEqualsScalar, HaddRowsPutsRowJInLaneJ) {
  using kernels::simd::fbatch, kernels::simd::W;
  alignas(64) float lane[W];
  fbatch rows[W];
  for (int j = 0; j < W; ++j) {
    for (int i = 0; i < W; ++i) lane[i] = static_cast<float>(j * 1000 + i * (j + 1));  // distinct sums, exact in float
    rows[j] = fbatch::load_aligned(lane);
  }
  kernels::simd::hadd_rows(rows).store_aligned(lane);
  for (int j = 0; j < W; ++j)
    EXPECT_EQ(lane[j], static_cast<float>(j * 1000 * W + (j + 1) * W * (W - 1) / 2)) << "lane " << j;
}

TEST(SimdEqualsScalar, Linear) {
  std::mt19937 rng(5);
  for (DType dtype : {DType::f32, DType::f16, DType::i8, DType::q4}) {
    for (int cols : kSizes) {
      for (int group : {cols, 16, 32}) {
        if (dtype != DType::i8 && group != cols) continue;
        if (dtype == DType::q4 && cols % kQ4Block != 0) continue;
        if (cols % group != 0) continue;
        for (int n : {1, 3})
          // Whole blocks of W rows and a remainder; the one-token path reads blocks in fours
          // (f32 with AVX-512: four memory streams), then pairs, then a lone one: 119 = 7
          // blocks of 16 + 7 rows on AVX-512 (a four, a pair, a lone block).
          for (int rows : {7, 37, 53, 119}) {
            TestMatrix t = make_matrix(rows, cols, dtype, group, rng);
            const std::vector<float> x = random_vector(n * cols, rng);
            std::vector<float> a(static_cast<size_t>(n * rows)), b(a.size());
            kernels::linear(Scalar{}, t.m, x.data(), n, a.data());
            kernels::linear(Simd{}, t.m, x.data(), n, b.data());
            SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << " rows " << rows << " cols " << cols << " group "
                                              << group << " tokens " << n);
            expect_close(b, a, 2e-6 * std::sqrt(static_cast<double>(cols)), 1.0, "linear");
          }
      }
    }
  }
}

// Decode reads blocks of rows in fours or pairs (memory streams), and prefill turns tiles
// of rows (int8 on x86); which rows a row is read beside depends on the row range (a
// worker's share), so each row's arithmetic must not: any split of the rows gives the
// same bits as the whole product, for one token and for a prefill's several.
TEST(SimdKernels, RowResultsDoNotDependOnTheRowRange) {
  std::mt19937 rng(31);
  const int rows = 200;
  // 160: a 128-column step and a lone 32-column block; 1024: q4 decode's streams
  for (int cols : {160, 1024})
    for (int n : {1, 5})
      for (DType dtype : {DType::f32, DType::f16, DType::i8, DType::q4}) {
        TestMatrix t = make_matrix(rows, cols, dtype, cols, rng);
        const std::vector<float> x = random_vector(n * cols, rng);
        const size_t out = static_cast<size_t>(n) * rows;
        std::vector<int8_t> q(x.size());
        std::vector<float> s(static_cast<size_t>(n * cols / kernels::kActBlock));
        kernels::quantize_activations(Simd{}, x.data(), n, cols, q.data(), s.data());
        std::vector<float> whole(out), whole_q8(out);
        kernels::linear(Simd{}, t.m, x.data(), n, whole.data());
        if (dtype == DType::i8) kernels::linear_q8(Simd{}, t.m, q.data(), s.data(), n, whole_q8.data());
        std::vector<int8_t> q4q(q.size());
        std::vector<float> q4s(s.size());
        std::vector<int32_t> q4sum(s.size());
        kernels::quantize_activations_q4(Simd{}, x.data(), n, cols, q4q.data(), q4s.data(), q4sum.data());
        const kernels::ActQ4 a4{q4q.data(), q4s.data(), q4sum.data()};
        if (dtype == DType::q4) kernels::linear_q4(Simd{}, t.m, a4, n, whole_q8.data());
        for (int split : {16, 48, 64, 112, 176}) {  // multiples of 16, as the engine's worker shares
          std::vector<float> parts(out), parts_q8(out);
          kernels::linear(Simd{}, t.m, x.data(), n, parts.data(), 0, split);
          kernels::linear(Simd{}, t.m, x.data(), n, parts.data(), split, rows);
          SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << " " << cols << " columns split at row " << split
                                            << ", " << n << " tokens");
          EXPECT_EQ(parts, whole);
          if (dtype == DType::i8) {
            kernels::linear_q8(Simd{}, t.m, q.data(), s.data(), n, parts_q8.data(), 0, split);
            kernels::linear_q8(Simd{}, t.m, q.data(), s.data(), n, parts_q8.data(), split, rows);
            EXPECT_EQ(parts_q8, whole_q8);
          }
          if (dtype == DType::q4) {
            kernels::linear_q4(Simd{}, t.m, a4, n, parts_q8.data(), 0, split);
            kernels::linear_q4(Simd{}, t.m, a4, n, parts_q8.data(), split, rows);
            EXPECT_EQ(parts_q8, whole_q8);
          }
        }
      }
}

TEST(SimdEqualsScalar, QuantizeActivationsSameBytes) {
  std::mt19937 rng(24);
  const int n = 3, cols = 160;
  auto x = random_vector(n * cols, rng, 2.f);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(64 + i)] = 0.f;  // an all-zero block
  // Block 0: amax 127 makes the step exactly 1, so these land on ties: half to even.
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(i)] = 0.f;
  x[0] = 127.f;
  x[1] = 2.5f;
  x[2] = -3.5f;
  x[3] = 0.5f;
  std::vector<int8_t> a(x.size()), b(x.size());
  std::vector<float> sa(static_cast<size_t>(n * cols / kernels::kActBlock)), sb(sa.size());
  kernels::quantize_activations(Scalar{}, x.data(), n, cols, a.data(), sa.data());
  kernels::quantize_activations(Simd{}, x.data(), n, cols, b.data(), sb.data());
  EXPECT_EQ(a[1], 2);
  EXPECT_EQ(a[2], -4);
  EXPECT_EQ(a[3], 0);
  EXPECT_EQ(a, b);
  EXPECT_EQ(sa, sb);
}

// The integer dot-product kernels against the scalar reference: bit for bit with ARM
// dotprod (same operations in the same order), to float rounding on x86 (8 lanes per
// block stay separate until scaled; AVX-512 also takes off the 128 * x that w + 128
// adds). Rows 37 and 53 = whole blocks of W rows and a remainder; 96 and 160 columns end
// in a lone 32-column block, 192 in a 64-column chunk after the 128-column steps; weights
// include -128. Activations of one sign (as after a ReLU) make the largest offsets.
TEST(SimdEqualsScalar, LinearQ8) {
  if (!kernels::kInt8Dot) GTEST_SKIP() << "this target has no integer dot products";
  std::mt19937 rng(23);
  for (bool one_sign : {false, true})
    for (int cols : {96, 160, 192, 256})
      for (int group : {cols, 32, 64}) {
        if (cols % group != 0) continue;
        for (int rows :
             {11, 37, 53})  // 53: on AVX-512, a pair of 16-row blocks read as two streams, a lone block, 5 rows
          for (int n : {1, 3, 4, 5, 13, 70}) {  // prefill: fewer than 4 tokens one at a time, else x86's turned
                                                // tiles, 2 tokens per step (odd counts), 64 at a time (70)
            TestMatrix t = make_matrix(rows, cols, DType::i8, group, rng);
            t.storage[0] = 0x80;  // -128
            t.storage[static_cast<size_t>(cols + 5)] = 0x80;
            auto x = random_vector(n * cols, rng);
            if (one_sign)
              for (float& v : x) v = std::fabs(v);
            std::vector<int8_t> q(x.size());
            std::vector<float> s(static_cast<size_t>(n * cols / kernels::kActBlock)), a(static_cast<size_t>(n * rows)),
                b(a.size());
            kernels::quantize_activations(Scalar{}, x.data(), n, cols, q.data(), s.data());
            kernels::linear_q8(Scalar{}, t.m, q.data(), s.data(), n, a.data());
            kernels::linear_q8(Simd{}, t.m, q.data(), s.data(), n, b.data());
            SCOPED_TRACE(::testing::Message() << "rows " << rows << " cols " << cols << " group " << group << " tokens "
                                              << n << (one_sign ? " x >= 0" : ""));
#if defined(__ARM_FEATURE_DOTPROD)
            EXPECT_EQ(a, b);
#else
            // With AVX-512 the float sums also carry 128 * x (taken off at the end), and for
            // activations of one sign those offsets add up: about 10x the rounding of mixed
            // signs, 1e-4 of the result at most -- still far below the error of the int8
            // activations themselves (half a step of 1/127 of each block's largest).
            const double tol = (one_sign ? 1e-5 : 1e-6) * std::sqrt(static_cast<double>(cols));
            expect_close(b, a, tol, 1.0, "linear_q8");
#endif
          }
      }
}

// The SIMD q4 quantizer against the scalar one: the same bytes, scales and sums. Where
// an ISA header has one (x86, AArch64 dotprod), the Simd kernel must be it, not the
// scalar quantizer under another name.
#if MOE_SIMD && (MOE_Q8_X86 || (defined(__ARM_FEATURE_DOTPROD) && defined(__aarch64__))) && \
    !defined(MOE_Q4_SIMD_QUANTIZER)
#error "this target has a SIMD q4 quantizer, and quantize_activations_q4(Simd) does not take it"
#endif
TEST(SimdEqualsScalar, QuantizeActivationsQ4SameBytes) {
  std::mt19937 rng(32);
  for (int cols : {32, 64, 160, 384, 512, 800, 1408}) {  // groups of 1, 2, 5, 12, 16, 16 + 9, 16 + 16 + 12 blocks
    const int n = 3, blocks = cols / kQ4Block;
    auto x = random_vector(n * cols, rng, 2.f);
    for (int k = 0; k < 8; ++k)  // token 1's block 0 all zero (its columns 4 at a step of the group's 4g)
      for (int i = 0; i < 4; ++i) x[static_cast<size_t>(cols + k * 4 * std::min(blocks, 16) + i)] = 0.f;
    x[0] = 127.f;  // token 0's block 0: a step of exactly 1, so these are ties: half to even
    x[1] = 2.5f;
    x[2] = -3.5f;
    std::vector<int8_t> a(x.size()), b(x.size());
    std::vector<float> sa(static_cast<size_t>(n * blocks)), sb(sa.size());
    std::vector<int32_t> ua(sa.size()), ub(sa.size());
    kernels::quantize_activations_q4(Scalar{}, x.data(), n, cols, a.data(), sa.data(), ua.data());
    kernels::quantize_activations_q4(Simd{}, x.data(), n, cols, b.data(), sb.data(), ub.data());
    SCOPED_TRACE(::testing::Message() << cols << " columns");
    EXPECT_EQ(a[1], 2);
    EXPECT_EQ(a[2], -4);
    EXPECT_EQ(sa[static_cast<size_t>(blocks)], 0.f);
    EXPECT_EQ(a, b);
    EXPECT_EQ(sa, sb);
    EXPECT_EQ(ua, ub);
  }
}

// int4 x int8 against the scalar reference, to float rounding (each lane's block sum
// is exact; the float sums go in another order). Columns: one short group (1, 2, 5, 12
// blocks: masked and half vectors), whole groups, and whole groups then a short one
// (1408 = 44 blocks: 16 + 16 + 12); tokens: groups of NT and the rest one by one, and
// on x86 the turned tiles from kQ4TurnedFrom (4 or 6) tokens, 4 (AVX2: two tiles side by
// side, every block of a slice per group of tokens) or 2 at a time (AVX-512: in chunks of
// kQ4TurnedChunk, 16); rows: one, a tile and one, and several tiles and one (25, 49);
// one token from 512 columns (800 and 1408 end in a short group) taking a row block from
// each of four streams (AVX2, W = 8: 49), of two, then from one stream alone (AVX2: 25;
// AVX-512, W = 16: 17, 25, 49), below 512 columns AVX2's two-row and AVX-512's 4-row
// tiles.
TEST(SimdEqualsScalar, LinearQ4) {
  if (!kernels::kInt8Dot) GTEST_SKIP() << "this target has no integer dot products";
  std::mt19937 rng(26);
  for (bool one_sign : {false, true})
    for (int cols : {32, 64, 128, 160, 384, 512, 800, 1024, 1408})
      for (int rows : {1, 17, 25, 49})
        for (int n : {1, 3, 4, 5, 6, 9, 23, 70}) {  // 23: chunks of 16 and 7; 70: 64 tokens at a time
          TestMatrix t = make_matrix(rows, cols, DType::q4, 0, rng);
          auto x = random_vector(n * cols, rng);
          if (one_sign)
            for (float& v : x) v = std::fabs(v);
          std::vector<int8_t> q(x.size());
          std::vector<float> s(static_cast<size_t>(n * cols / kQ4Block)), a(static_cast<size_t>(n * rows)), b(a.size());
          std::vector<int32_t> sums(s.size());
          kernels::quantize_activations_q4(Scalar{}, x.data(), n, cols, q.data(), s.data(), sums.data());
          const kernels::ActQ4 act{q.data(), s.data(), sums.data()};
          kernels::linear_q4(Scalar{}, t.m, act, n, a.data());
          kernels::linear_q4(Simd{}, t.m, act, n, b.data());
          SCOPED_TRACE(::testing::Message()
                       << "rows " << rows << " cols " << cols << " tokens " << n << (one_sign ? " x >= 0" : ""));
          expect_close(b, a, 1e-6 * std::sqrt(static_cast<double>(cols)), 1.0, "linear_q4");
        }
}

TEST(SimdEqualsScalar, NormsSoftmaxActivation) {
  std::mt19937 rng(6);
  for (int n : kSizes) {
    SCOPED_TRACE(::testing::Message() << "n = " << n);
    const auto x = random_vector(n, rng, 2.f), w = random_vector(n, rng), b = random_vector(n, rng);
    std::vector<float> a(static_cast<size_t>(n)), s(static_cast<size_t>(n));
    kernels::rmsnorm(Scalar{}, x.data(), w.data(), n, 1e-5f, a.data());
    kernels::rmsnorm(Simd{}, x.data(), w.data(), n, 1e-5f, s.data());
    expect_close(s, a, 1e-5, 1.0, "rmsnorm");
    kernels::layernorm(Scalar{}, x.data(), w.data(), b.data(), n, 1e-5f, a.data());
    kernels::layernorm(Simd{}, x.data(), w.data(), b.data(), n, 1e-5f, s.data());
    expect_close(s, a, 1e-5, 1.0, "layernorm");
    a = x;
    s = x;
    kernels::softmax(Scalar{}, a.data(), n);
    kernels::softmax(Simd{}, s.data(), n);
    expect_close(s, a, 1e-5, 1e-7, "softmax");
    a = x;
    s = x;
    kernels::silu_mul(Scalar{}, a.data(), w.data(), n);
    kernels::silu_mul(Simd{}, s.data(), w.data(), n);
    expect_close(s, a, 1e-5, 1e-6, "silu_mul");
  }
}

TEST(SimdEqualsScalar, RopeAndAttention) {
  std::mt19937 rng(8);
  for (int hd : {2, 4, 8, 16, 32, 64, 128, 6, 34}) {
    SCOPED_TRACE(::testing::Message() << "head_dim " << hd);
    std::vector<float> cosv(static_cast<size_t>(hd / 2)), sinv(static_cast<size_t>(hd / 2));
    kernels::rope_angles(37, hd, 10000.f, cosv.data(), sinv.data());
    const auto q = random_vector(3 * hd, rng);
    auto a = q, s = q;
    kernels::rope(Scalar{}, a.data(), 3, hd, cosv.data(), sinv.data());
    kernels::rope(Simd{}, s.data(), 3, hd, cosv.data(), sinv.data());
    expect_close(s, a, 1e-6, 1.0, "rope");
    for (int n_pos : {1, 2, 5, 7, 8, 9, 16, 17, 100}) {
      const auto keys = random_vector(n_pos * hd, rng), values = random_vector(n_pos * hd, rng);
      const auto query = random_vector(hd, rng);
      std::vector<float> sa(static_cast<size_t>(n_pos)), ss(static_cast<size_t>(n_pos)), oa(static_cast<size_t>(hd)),
          os(static_cast<size_t>(hd));
      const float scale = 1.f / std::sqrt(static_cast<float>(hd));
      kernels::attention(Scalar{}, query.data(), keys.data(), values.data(), n_pos, hd, scale, sa.data(), oa.data());
      kernels::attention(Simd{}, query.data(), keys.data(), values.data(), n_pos, hd, scale, ss.data(), os.data());
      expect_close(os, oa, 1e-5, 1.0, "attention");
    }
  }
}

// One token's query heads of a kv head in one pass (decode's grouped-query attention): the
// same bits as attention() head by head, for groups beyond one pass's kAttentionPairs and
// positions over several blocks of keys, in f32 and in the f16 cache's halves; and the
// reference's result, within SIMD's rounding.
template <class T>
void check_attention_group(std::mt19937& rng) {
  for (int hd : {16, 32, 64, 128, 34}) {
    for (int group : {1, 2, 3, 8, 17}) {
      for (int n_pos : {1, 7, 16, 33, 100, 300}) {
        SCOPED_TRACE(::testing::Message() << "head_dim " << hd << " group " << group << " positions " << n_pos
                                          << (sizeof(T) == 2 ? " f16" : " f32"));
        std::vector<T> keys(static_cast<size_t>(n_pos) * hd), values(keys.size());
        for (size_t i = 0; i < keys.size(); ++i) {
          const float k = std::normal_distribution<float>()(rng), v = std::normal_distribution<float>()(rng);
          if constexpr (sizeof(T) == 2) keys[i] = float_to_half(k), values[i] = float_to_half(v);
          else keys[i] = k, values[i] = v;
        }
        const auto q = random_vector(group * hd, rng);
        const long stride = n_pos + 5;  // the engine's rows are longer than the positions
        std::vector<float> sg(static_cast<size_t>(group) * stride), og(static_cast<size_t>(group) * hd),
            sh(static_cast<size_t>(n_pos)), oh(static_cast<size_t>(hd)), sr(sh.size()), orf(oh.size());
        const float scale = 1.f / std::sqrt(static_cast<float>(hd));
        kernels::attention_chunk(Simd{}, q.data(), 0, 1, group, keys.data(), values.data(), n_pos, hd, scale, sg.data(),
                                 stride, og.data(), 0);
        for (int g = 0; g < group; ++g) {
          const float* qh = q.data() + static_cast<long>(g) * hd;
          kernels::attention(Simd{}, qh, keys.data(), values.data(), n_pos, hd, scale, sh.data(), oh.data());
          ASSERT_EQ(std::memcmp(oh.data(), og.data() + static_cast<long>(g) * hd, sizeof(float) * hd), 0)
              << "head " << g;
          kernels::attention(Scalar{}, qh, keys.data(), values.data(), n_pos, hd, scale, sr.data(), orf.data());
          expect_close(std::vector<float>(og.begin() + g * hd, og.begin() + (g + 1) * hd), orf, 1e-5, 1.0,
                       "a token's group");
        }
      }
    }
  }
}

TEST(SimdEqualsScalar, AttentionOfATokensGroupIsAttentionHeadByHead) {
  std::mt19937 rng(12);
  check_attention_group<float>(rng);
  check_attention_group<uint16_t>(rng);
}

// Decode over several kv heads (attention_kv_heads), their caches read side by side: for
// heads of up to 8 vectors the same bits as attention_chunk a kv head at a time, whatever
// kv heads are beside a head (attention_kv_heads_whole on 1 to 4 at once, on every target,
// even where the engine takes one at a time); wider heads the same bits alone as beside
// others; every head within SIMD's rounding of the reference; in f32 and f16.
template <class T>
void check_attention_kv_heads(std::mt19937& rng) {
  for (int hd : {16, 32, 64, 128, 34}) {
    const int S = hd % kernels::simd::W == 0 ? hd / kernels::simd::W : 0;
    for (int group : {1, 2, 3, 8}) {
      for (int heads : {1, 3, 4, 5}) {
        for (int n_pos : {1, 7, 16, 33, 100, 300}) {
          SCOPED_TRACE(::testing::Message() << "head_dim " << hd << " group " << group << " kv heads " << heads
                                            << " positions " << n_pos << (sizeof(T) == 2 ? " f16" : " f32"));
          const long kv_stride = static_cast<long>(n_pos + 3) * hd;  // the engine's caches hold more positions
          std::vector<T> keys(static_cast<size_t>(heads * kv_stride)), values(keys.size());
          for (size_t i = 0; i < keys.size(); ++i) {
            const float k = std::normal_distribution<float>()(rng), v = std::normal_distribution<float>()(rng);
            if constexpr (sizeof(T) == 2) keys[i] = float_to_half(k), values[i] = float_to_half(v);
            else keys[i] = k, values[i] = v;
          }
          const auto q = random_vector(heads * group * hd, rng);
          const long stride = n_pos + 5, kv_scores = group * stride + 7;
          std::vector<float> scores(static_cast<size_t>(heads * kv_scores)), out(q.size()), one(q.size()),
              sr(static_cast<size_t>(n_pos)), orf(static_cast<size_t>(hd));
          const float scale = 1.f / std::sqrt(static_cast<float>(hd));
          kernels::attention_kv_heads(Simd{}, heads, group, q.data(), keys.data(), values.data(), kv_stride, n_pos, hd,
                                      scale, scores.data(), stride, kv_scores, out.data());
          for (int i = 0; i < heads; ++i)
            kernels::attention_chunk(Simd{}, q.data() + i * group * hd, 0, 1, group, keys.data() + i * kv_stride,
                                     values.data() + i * kv_stride, n_pos, hd, scale, scores.data() + i * kv_scores,
                                     stride, one.data() + i * group * hd, 0);
          if (S >= 1 && S <= 8) {
            ASSERT_EQ(std::memcmp(out.data(), one.data(), sizeof(float) * out.size()), 0) << "a kv head at a time";
          }
          for (int h = 0; h < heads * group; ++h) {
            const int i = h / group;
            kernels::attention(Scalar{}, q.data() + h * hd, keys.data() + i * kv_stride, values.data() + i * kv_stride,
                               n_pos, hd, scale, sr.data(), orf.data());
            expect_close(std::vector<float>(out.begin() + h * hd, out.begin() + (h + 1) * hd), orf, 1e-5, 1.0,
                         "attention_kv_heads");
          }
          if (S == 0 || group > kernels::kAttentionPairs) continue;
          // The side-by-side kernel itself, K kv heads at once, against each head alone.
          const int K = std::min({heads, 4, kernels::kAttentionPairs / group});
          const auto whole = [&](int i0, int k, std::vector<float>& o) {
            const float* qs[4];
            const T *ks[4], *vs[4];
            float *ss[4], *os[4];
            for (int i = 0; i < k; ++i) {
              qs[i] = q.data() + (i0 + i) * group * hd;
              os[i] = o.data() + (i0 + i) * group * hd;
              ks[i] = keys.data() + (i0 + i) * kv_stride;
              vs[i] = values.data() + (i0 + i) * kv_stride;
              ss[i] = scores.data() + (i0 + i) * kv_scores;
            }
            return kernels::simd::with_whole_vectors(S, [&]<int V>(std::integral_constant<int, V>) {
              kernels::simd::attention_kv_heads_whole<V>(k, group, qs, ks, vs, n_pos, scale, ss, stride, os);
            });
          };
          if (!whole(0, K, out)) continue;  // not a head of whole vectors the kernels take
          for (int i = 0; i < K; ++i) whole(i, 1, one);
          ASSERT_EQ(std::memcmp(out.data(), one.data(), sizeof(float) * K * group * hd), 0) << K << " at once";
          if (S > 8) continue;
          for (int i = 0; i < K; ++i)
            kernels::attention_chunk(Simd{}, q.data() + i * group * hd, 0, 1, group, keys.data() + i * kv_stride,
                                     values.data() + i * kv_stride, n_pos, hd, scale, scores.data() + i * kv_scores,
                                     stride, one.data() + i * group * hd, 0);
          ASSERT_EQ(std::memcmp(out.data(), one.data(), sizeof(float) * K * group * hd), 0) << K << " at once";
        }
      }
    }
  }
}

TEST(SimdEqualsScalar, AttentionOfKvHeadsSideBySideIsAKvHeadAtATime) {
  std::mt19937 rng(14);
  check_attention_kv_heads<float>(rng);
  check_attention_kv_heads<uint16_t>(rng);
}

// A chunk's tokens in passes over one kv head's cache (prefill), token i seeing n_pos + i
// positions: within SIMD's rounding of the reference, for groups that fill a pass's
// kAttentionPairs with several tokens, exactly or not, and beyond it; in f32 and f16.
// And the same bits for a (token, head) whatever the engine puts beside it: its heads one
// at a time (a worker's share when the kv heads do not divide), or the token given with
// just one other.
template <class T>
void check_attention_chunk(std::mt19937& rng) {
  for (int hd : {16, 64, 128, 34}) {
    for (int group : {1, 2, 3, 8, 17}) {
      for (int tokens : {1, 2, 5, 16, 19}) {
        for (int n_pos : {1, 15, 33, 130}) {
          SCOPED_TRACE(::testing::Message() << "head_dim " << hd << " group " << group << " tokens " << tokens
                                            << " first positions " << n_pos << (sizeof(T) == 2 ? " f16" : " f32"));
          const int last = n_pos + tokens - 1;
          std::vector<T> keys(static_cast<size_t>(last) * hd), values(keys.size());
          for (size_t i = 0; i < keys.size(); ++i) {
            const float k = std::normal_distribution<float>()(rng), v = std::normal_distribution<float>()(rng);
            if constexpr (sizeof(T) == 2) keys[i] = float_to_half(k), values[i] = float_to_half(v);
            else keys[i] = k, values[i] = v;
          }
          const long q_stride = static_cast<long>(group) * hd + 3;  // a token's row holds other heads too
          const auto q = random_vector(static_cast<int>(tokens * q_stride), rng);
          const long stride = last + 2;
          std::vector<float> scores(static_cast<size_t>(std::max(group, kernels::kAttentionPairs) * stride));
          std::vector<float> out(static_cast<size_t>(tokens * q_stride)), part(out.size()),
              sr(static_cast<size_t>(last)), orf(static_cast<size_t>(hd));
          const float scale = 1.f / std::sqrt(static_cast<float>(hd));
          const auto chunk = [&](int i0, int n, int g0, int heads, std::vector<float>& o) {
            kernels::attention_chunk(Simd{}, q.data() + i0 * q_stride + g0 * hd, q_stride, n, heads, keys.data(),
                                     values.data(), n_pos + i0, hd, scale, scores.data(), stride,
                                     o.data() + i0 * q_stride + g0 * hd, q_stride);
          };
          chunk(0, tokens, 0, group, out);
          for (int i = 0; i < tokens; ++i) {
            const float* qt = q.data() + i * q_stride;
            const float* ot = out.data() + i * q_stride;
            for (int g = 0; g < group; ++g) {
              kernels::attention(Scalar{}, qt + static_cast<long>(g) * hd, keys.data(), values.data(), n_pos + i, hd,
                                 scale, sr.data(), orf.data());
              expect_close(std::vector<float>(ot + g * hd, ot + (g + 1) * hd), orf, 1e-5, 1.0, "attention_chunk");
            }
          }
          if (tokens > kernels::kAttentionPairs / group) continue;  // more than the engine gives a call
          for (int g = 0; g < group; ++g) chunk(0, tokens, g, 1, part);
          ASSERT_EQ(std::memcmp(part.data(), out.data(), sizeof(float) * out.size()), 0) << "heads one at a time";
          for (int i = 0; i + 1 < tokens; ++i) {
            chunk(i, 2, 0, group, part);
            ASSERT_EQ(std::memcmp(part.data() + i * q_stride, out.data() + i * q_stride,
                                  sizeof(float) * 2 * q_stride - 3 * sizeof(float)),
                      0)
                << "tokens " << i << " and " << i + 1 << " alone";
          }
        }
      }
    }
  }
}

TEST(SimdEqualsScalar, AttentionChunkMatchesReferenceWhateverItsNeighbours) {
  std::mt19937 rng(13);
  check_attention_chunk<float>(rng);
  check_attention_chunk<uint16_t>(rng);
}

TEST(SimdEqualsScalar, TopkIncludingTies) {
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> coarse(-3, 3);  // many ties
  for (int n : {1, 2, 4, 8, 9, 16, 17, 33, 64}) {
    for (int k = 1; k <= std::min(n, 8); ++k) {
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<float> x(static_cast<size_t>(n));
        for (float& v : x) v = trial % 2 ? static_cast<float>(coarse(rng)) : std::normal_distribution<float>()(rng);
        int ia[8], is[8];
        float va[8], vs[8];
        kernels::topk(Scalar{}, x.data(), n, k, ia, va);
        kernels::topk(Simd{}, x.data(), n, k, is, vs);
        ASSERT_EQ(std::vector<int>(ia, ia + k), std::vector<int>(is, is + k)) << "n " << n << " k " << k;
        // And the scalar result is the stable descending order.
        std::vector<int> order(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](int a, int b) { return x[static_cast<size_t>(a)] > x[static_cast<size_t>(b)]; });
        ASSERT_EQ(std::vector<int>(ia, ia + k), std::vector<int>(order.begin(), order.begin() + k));
      }
    }
  }
}
#endif

}  // namespace
}  // namespace moe
