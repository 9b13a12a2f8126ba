#include "trainer/optimizer.hpp"

#include <cmath>
#include <numbers>

#include "moe/kernels/backend.hpp"

namespace moe::train {

AdamW::AdamW(const TrainConfig& config, long n_params, long n_decayed)
    : m(static_cast<size_t>(n_params), 0.f),
      v(static_cast<size_t>(n_params), 0.f),
      cfg_(config),
      n_decayed_(n_decayed) {}

float AdamW::learning_rate(int step) const {
  if (step < cfg_.warmup) return cfg_.lr * static_cast<float>(step + 1) / static_cast<float>(cfg_.warmup);
  if (cfg_.schedule == Schedule::constant || cfg_.steps <= cfg_.warmup) return cfg_.lr;
  const double progress =
      std::min(1.0, static_cast<double>(step - cfg_.warmup) / static_cast<double>(cfg_.steps - cfg_.warmup));
  return static_cast<float>(cfg_.min_lr +
                            0.5 * (cfg_.lr - cfg_.min_lr) * (1.0 + std::cos(std::numbers::pi * progress)));
}

double AdamW::update(std::vector<float>& params, std::vector<float>& grads, int step) {
  const long n = static_cast<long>(params.size());
  // The gradient's squared norm is summed per fixed block, then over blocks in order: the
  // same value for any thread count. Without clipping it is taken in the update's own
  // pass over memory (the update is bandwidth-bound); with clipping it needs a pass first.
  constexpr long kBlock = 1 << 16;
  const long blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  auto total = [&] {
    double s = 0;
    for (double p : partial) s += p;
    return std::sqrt(s);
  };
  float clip = 1.f;
  double norm = 0;
  if (cfg_.grad_clip > 0.f) {
#pragma omp parallel for schedule(static)
    for (long b = 0; b < blocks; ++b) {
      double s = 0;
      for (long i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i)
        s += static_cast<double>(grads[static_cast<size_t>(i)]) * grads[static_cast<size_t>(i)];
      partial[static_cast<size_t>(b)] = s;
    }
    norm = total();
    if (norm > cfg_.grad_clip) clip = static_cast<float>(cfg_.grad_clip / norm);
  }

  const float lr = learning_rate(step);
  const int t = step + 1;
  const float b1 = cfg_.beta1, b2 = cfg_.beta2;
  const float inv_bias2_sqrt = 1.f / std::sqrt(1.f - std::pow(b2, static_cast<float>(t)));
  const float step_size = lr / (1.f - std::pow(b1, static_cast<float>(t)));
  const float decay = 1.f - lr * cfg_.weight_decay;
  const bool measure = cfg_.grad_clip <= 0.f;
  float* p = params.data();
  const float* g = grads.data();
  float* mm = m.data();
  float* vv = v.data();
  // One element of AdamW, as torch.optim.AdamW (foreach=False) computes it.
  const auto scalar = [&](long i, float wd) {
    const float gi = g[i] * clip;
    p[i] *= wd;
    mm[i] = b1 * mm[i] + (1.f - b1) * gi;
    vv[i] = b2 * vv[i] + (1.f - b2) * gi * gi;
    p[i] -= step_size * mm[i] / (std::sqrt(vv[i]) * inv_bias2_sqrt + cfg_.adam_eps);
    return gi * gi;
  };
#pragma omp parallel for schedule(static)
  for (long b = 0; b < blocks; ++b) {
    const long begin = b * kBlock, end = std::min(n, (b + 1) * kBlock);
    double s = 0;
    long i = begin;
#if MOE_SIMD
    using kernels::simd::fbatch;
    constexpr long W = kernels::simd::W;
    fbatch sq(0.f);
    for (; i + W <= end; i += W) {
      const fbatch gi = fbatch::load_unaligned(g + i) * fbatch(clip);
      // Decay is uniform within a vector except where the decayed prefix ends inside it.
      if (i + W <= n_decayed_ || i >= n_decayed_) {
        fbatch pi = fbatch::load_unaligned(p + i) * fbatch(i < n_decayed_ ? decay : 1.f);
        const fbatch mi = fbatch(b1) * fbatch::load_unaligned(mm + i) + fbatch(1.f - b1) * gi;
        const fbatch vi = fbatch(b2) * fbatch::load_unaligned(vv + i) + fbatch(1.f - b2) * gi * gi;
        pi -= fbatch(step_size) * mi / (xsimd::sqrt(vi) * fbatch(inv_bias2_sqrt) + fbatch(cfg_.adam_eps));
        pi.store_unaligned(p + i);
        mi.store_unaligned(mm + i);
        vi.store_unaligned(vv + i);
        sq = xsimd::fma(gi, gi, sq);
      } else {
        for (long j = i; j < i + W; ++j) s += scalar(j, j < n_decayed_ ? decay : 1.f);
      }
    }
    s += xsimd::hadd(sq);
#endif
    for (; i < end; ++i) s += scalar(i, i < n_decayed_ ? decay : 1.f);
    if (measure) partial[static_cast<size_t>(b)] = s;
  }
  return measure ? total() : norm;
}

}  // namespace moe::train
