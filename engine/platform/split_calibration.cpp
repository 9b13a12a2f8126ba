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

double median(std::vector<double>& v) {
  std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// A product that stays in cache: the int8 x int8 kernel where the target has it (the
// fastest, so the threshold is never too small for it), else f32 weights.
struct Probe {
  static constexpr int kRows = 256, kCols = 512, kTokens = 4;
  std::vector<int8_t> w, xq;
  std::vector<float> wf, scales, x, y, xs;
  Matrix m;
  Probe()
      : w(static_cast<size_t>(kRows) * kCols),
        xq(static_cast<size_t>(kTokens) * kCols),
        scales(kRows, 0.01f),
        x(static_cast<size_t>(kTokens) * kCols, 0.5f),
        y(static_cast<size_t>(kTokens) * kRows),
        xs(x.size() / kernels::kActBlock) {
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<int8_t>(i * 37 % 255 - 127);
    wf.assign(w.begin(), w.end());
    m.rows = kRows, m.cols = kCols;
    if (kernels::kInt8Dot) m.data = w.data(), m.scales = scales.data(), m.dtype = DType::i8, m.group_size = kCols;
    else m.data = wf.data(), m.dtype = DType::f32;
    if (kernels::kInt8Dot)
      kernels::quantize_activations(kernels::Best{}, x.data(), kTokens, kCols, xq.data(), xs.data());
  }
  // Rows of this part's share, in blocks of 16 as the engine splits them.
  static void part(void* ctx, int part, int parts) {
    Probe& p = *static_cast<Probe*>(ctx);
    const int blocks = kRows / 16, r0 = blocks * part / parts * 16, r1 = blocks * (part + 1) / parts * 16;
    if (kernels::kInt8Dot)
      kernels::linear_q8(kernels::Best{}, p.m, p.xq.data(), p.xs.data(), kTokens, p.y.data(), r0, r1);
    else kernels::linear(kernels::Best{}, p.m, p.x.data(), kTokens, p.y.data(), r0, r1);
  }
  static constexpr double macs() { return static_cast<double>(kRows) * kCols * kTokens; }
};

}  // namespace

SplitCalibration calibrate_split(ThreadPool& pool) {
  SplitCalibration c;
  Probe probe;
  std::vector<double> one, shared;
  for (int rep = 0; rep < 60; ++rep) {
    auto t0 = Clock::now();
    Probe::part(&probe, 0, 1);
    if (rep >= 10) one.push_back(seconds(t0, Clock::now()));
  }
  const double t_one = median(one);
  c.macs_per_s = Probe::macs() / t_one;
  if (pool.threads() < 2) return c;
  // The hand-over as the engine pays it: the same product shared, less its share of the
  // work (the wake-up, the caches the other core must fill, the wait for the slowest).
  // Rounds until the cost settles, the least median kept: a new worker thread can share
  // its parent's core for milliseconds before the scheduler moves it (measured: a median
  // of ~80 us for the first rounds, 0.4-0.5 us once moved).
  const Workers w = pool.workers();
  double best = 1e9;
  for (int round = 0; round < 8; ++round) {
    shared.clear();
    for (int rep = 0; rep < 100; ++rep) {
      const auto t0 = Clock::now();
      w.run(w.pool, &Probe::part, &probe, Workers::kPoolParts);
      shared.push_back(seconds(t0, Clock::now()));
    }
    const double m = median(shared);
    if (m > best * 0.9 && best < t_one) break;  // settled
    best = std::min(best, m);
  }
  c.handover_s = std::max(0.0, best - t_one / w.threads);
  // Six hand-overs' worth per worker: at two, tiny-a's prefill (products of 0.1-0.4M
  // multiply-adds in cache) still ran slower on two threads than on one (bench/README.md,
  // "Threads"). Capped so that a noisy measurement (a worker descheduled) cannot stop
  // the memory-bound decode products of real models (0.7M and up) from being shared.
  c.min_macs_per_worker = static_cast<long>(std::clamp(6 * c.handover_s * c.macs_per_s, 16384.0, 262144.0));
  return c;
}

}  // namespace moe::platform
