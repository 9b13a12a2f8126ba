#include "trainer/optimizer.hpp"

#include <cmath>
#include <numbers>

namespace moe::train {

AdamW::AdamW(const TrainConfig& config, long n_params, long n_decayed)
    : m(static_cast<size_t>(n_params), 0.f), v(static_cast<size_t>(n_params), 0.f), cfg_(config), n_decayed_(n_decayed) {}

float AdamW::learning_rate(int step) const {
  if (step < cfg_.warmup) return cfg_.lr * static_cast<float>(step + 1) / static_cast<float>(cfg_.warmup);
  if (cfg_.schedule == Schedule::constant || cfg_.steps <= cfg_.warmup) return cfg_.lr;
  const double progress = std::min(1.0, static_cast<double>(step - cfg_.warmup) / static_cast<double>(cfg_.steps - cfg_.warmup));
  return static_cast<float>(cfg_.min_lr + 0.5 * (cfg_.lr - cfg_.min_lr) * (1.0 + std::cos(std::numbers::pi * progress)));
}

double AdamW::update(std::vector<float>& params, std::vector<float>& grads, int step) {
  const long n = static_cast<long>(params.size());
  // Global norm, summed over fixed blocks in a fixed order (same result for any thread count).
  constexpr long kBlock = 1 << 16;
  const long blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
#pragma omp parallel for schedule(static)
  for (long b = 0; b < blocks; ++b) {
    double s = 0;
    for (long i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) s += static_cast<double>(grads[static_cast<size_t>(i)]) * grads[static_cast<size_t>(i)];
    partial[static_cast<size_t>(b)] = s;
  }
  double norm2 = 0;
  for (double s : partial) norm2 += s;
  const double norm = std::sqrt(norm2);
  const float clip = cfg_.grad_clip > 0.f && norm > cfg_.grad_clip ? static_cast<float>(cfg_.grad_clip / norm) : 1.f;

  const float lr = learning_rate(step);
  const int t = step + 1;
  const float b1 = cfg_.beta1, b2 = cfg_.beta2;
  const float bias1 = 1.f - std::pow(b1, static_cast<float>(t));
  const float bias2_sqrt = std::sqrt(1.f - std::pow(b2, static_cast<float>(t)));
  const float step_size = lr / bias1;
  const float decay = 1.f - lr * cfg_.weight_decay;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) {
    const float g = grads[static_cast<size_t>(i)] * clip;
    float& p = params[static_cast<size_t>(i)];
    if (i < n_decayed_) p *= decay;
    float& mi = m[static_cast<size_t>(i)];
    float& vi = v[static_cast<size_t>(i)];
    mi = b1 * mi + (1.f - b1) * g;
    vi = b2 * vi + (1.f - b2) * g * g;
    p -= step_size * mi / (std::sqrt(vi) / bias2_sqrt + cfg_.adam_eps);
  }
  return norm;
}

}  // namespace moe::train
