#include "platform/split_calibration.hpp"

#include <algorithm>
#include <chrono>
#include <vector>

#include "moe/kernels/linear.hpp"
#include "moe/kernels/linear_q8.hpp"

namespace moe::platform {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// One core's multiply-adds per second on a product that stays in cache: the int8 x int8
// kernel where the target has it (the fastest, so the threshold is never too small for
// it), else f32 weights. Best of a few runs.
double macs_per_second() {
  constexpr int kRows = 256, kCols = 512, kTokens = 4;
  std::vector<int8_t> w(static_cast<size_t>(kRows) * kCols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<int8_t>(i * 37 % 255 - 127);
  std::vector<float> wf(w.begin(), w.end()), scales(kRows, 0.01f), x(static_cast<size_t>(kTokens) * kCols, 0.5f),
      y(static_cast<size_t>(kTokens) * kRows), xs(x.size() / kernels::kActBlock);
  std::vector<int8_t> xq(x.size());
  Matrix m;
  m.rows = kRows, m.cols = kCols;
  if (kernels::kInt8Dot) {
    m.data = w.data(), m.scales = scales.data(), m.dtype = DType::i8, m.group_size = kCols;
  } else {
    m.data = wf.data(), m.dtype = DType::f32;
  }
  double best = 1e9;
  for (int rep = 0; rep < 30; ++rep) {
    const auto t0 = Clock::now();
    if (kernels::kInt8Dot) {
      kernels::quantize_activations(kernels::Best{}, x.data(), kTokens, kCols, xq.data(), xs.data());
      kernels::linear_q8(kernels::Best{}, m, xq.data(), xs.data(), kTokens, y.data());
    } else {
      kernels::linear(kernels::Best{}, m, x.data(), kTokens, y.data());
    }
    best = std::min(best, seconds(t0, Clock::now()));
    x[static_cast<size_t>(rep)] += y[0] * 1e-30f;  // keeps the work observable
  }
  return static_cast<double>(kRows) * kCols * kTokens / best;
}

}  // namespace

SplitCalibration calibrate_split(ThreadPool& pool) {
  SplitCalibration c;
  c.macs_per_s = macs_per_second();
  if (pool.threads() < 2) return c;
  const Workers w = pool.workers();
  const Workers::Task nothing = [](void*, int, int) {};
  std::vector<double> times;
  for (int rep = 0; rep < 220; ++rep) {
    const auto t0 = Clock::now();
    w.run(w.pool, nothing, nullptr);
    if (rep >= 20) times.push_back(seconds(t0, Clock::now()));  // the first wake the workers from sleep
  }
  std::nth_element(times.begin(), times.begin() + static_cast<long>(times.size() / 2), times.end());
  c.handover_s = times[times.size() / 2];
  c.min_macs_per_worker = std::max(16384L, static_cast<long>(2 * c.handover_s * c.macs_per_s));
  return c;
}

}  // namespace moe::platform
