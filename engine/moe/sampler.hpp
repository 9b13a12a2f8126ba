// Choosing the next token from logits: greedy, temperature, top-k, top-p, with a seeded
// PCG32 generator so the same seed gives the same text on every platform. Scratch is a
// fixed-size member: no allocation.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "moe/error.hpp"
#include "moe/kernels/softmax.hpp"

namespace moe {

// PCG32 (O'Neill, pcg-random.org): small state, good statistics, identical everywhere.
class Pcg32 {
 public:
  explicit Pcg32(uint64_t seed = 0, uint64_t stream = 0x853c49e6748fea9bull) : inc_(stream << 1 | 1u) {
    next();
    state_ += seed;
    next();
  }
  uint32_t next() {
    const uint64_t old = state_;
    state_ = old * 6364136223846793005ull + inc_;
    const auto xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
    const auto rot = static_cast<uint32_t>(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
  }
  // Uniform in [0, 1) with 24 bits: every value exactly representable as a float.
  float uniform() { return static_cast<float>(next() >> 8) * (1.f / 16777216.f); }

 private:
  uint64_t state_ = 0;
  uint64_t inc_;
};

struct SamplingParams {
  float temperature = 1.f;  // 0: greedy
  int top_k = 0;            // 0: off; keep the k most likely tokens
  float top_p = 1.f;        // 1: off; keep the smallest set whose probability reaches p
  uint64_t seed = 1;

  Error check() const {
    if (!(temperature >= 0.f) || !std::isfinite(temperature))
      return Error::make(ErrorCode::bad_token, "temperature must be a finite number >= 0 (0 = greedy), got %g",
                         static_cast<double>(temperature));
    if (top_k < 0) return Error::make(ErrorCode::bad_token, "top-k must be >= 0 (0 = off), got %d", top_k);
    if (!(top_p > 0.f && top_p <= 1.f))
      return Error::make(ErrorCode::bad_token, "top-p must be in (0, 1] (1 = off), got %g", static_cast<double>(top_p));
    return Error::none();
  }
};

// Index of the largest logit; the lowest index on ties; NaNs never win.
inline int32_t argmax(const float* logits, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i)
    if (logits[i] > logits[best] || logits[best] != logits[best]) best = i;
  return best;
}

template <int V>
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

  const SamplingParams& params() const { return params_; }

  int32_t sample(const float* logits) {
    // Below 1e-6 the softmax is the argmax anyway, and 1/T would overflow (1e-45).
    if (params_.temperature < 1e-6f || params_.top_k == 1) return argmax(logits, V);
    // Order of the filters as in Hugging Face generate(): temperature, top-k, top-p.
    const float inv_t = 1.f / params_.temperature;
    for (int i = 0; i < V; ++i) probs_[i] = logits[i] * inv_t;
    kernels::softmax(kernels::Scalar{}, probs_, V);

    int n = V;
    const bool cut_k = params_.top_k > 0 && params_.top_k < V;
    const bool cut_p = params_.top_p < 1.f;
    for (int i = 0; i < V; ++i) order_[i] = i;
    if (cut_k || cut_p) {
      // Most likely first; ties by id, so the order is the same on every platform.
      const auto more_likely = [this](int32_t a, int32_t b) {
        return probs_[a] > probs_[b] || (probs_[a] == probs_[b] && a < b);
      };
      if (cut_k) {
        n = params_.top_k;
        std::partial_sort(order_, order_ + n, order_ + V, more_likely);
      } else {
        std::sort(order_, order_ + V, more_likely);
      }
      if (cut_p) {
        float cumulative = 0.f;
        float mass = 0.f;
        for (int i = 0; i < n; ++i) mass += probs_[order_[i]];
        for (int i = 0; i < n; ++i) {
          cumulative += probs_[order_[i]];
          if (cumulative >= params_.top_p * mass) {
            n = i + 1;
            break;
          }
        }
      }
    }
    float mass = 0.f;
    for (int i = 0; i < n; ++i) mass += probs_[order_[i]];
    const float r = rng_.uniform() * mass;
    float cumulative = 0.f;
    for (int i = 0; i < n; ++i) {
      cumulative += probs_[order_[i]];
      if (r < cumulative) return order_[i];
    }
    return order_[n - 1];  // rounding left r at the very top
  }

 private:
  SamplingParams params_;
  Pcg32 rng_;
  float probs_[V] = {};
  int32_t order_[V] = {};
};

}  // namespace moe
