// Choosing the next token from logits: greedy, temperature, top-k, top-p, with a seeded
// PCG32 generator so the same seed gives the same text on every platform. Scratch is a
// fixed-size member: no allocation.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>

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
    if (params_.top_k > 0 && params_.top_k < V) {
      for (int i = 0; i < V; ++i) ranked_[i] = rank_key(probs_[i], i);
      n = params_.top_k;
      std::partial_sort(ranked_, ranked_ + n, ranked_ + V, std::greater<>{});
      if (params_.top_p < 1.f) {
        float mass = 0.f;
        for (int i = 0; i < n; ++i) mass += prob_of(ranked_[i]);
        n = reach(n, n, params_.top_p * mass);
      }
    } else if (params_.top_p < 1.f) {
      n = nucleus();
    } else {
      for (int i = 0; i < V; ++i) ranked_[i] = rank_key(probs_[i], i);
    }
    float mass = 0.f;
    for (int i = 0; i < n; ++i) mass += prob_of(ranked_[i]);
    const float r = rng_.uniform() * mass;
    float cumulative = 0.f;
    for (int i = 0; i < n; ++i) {
      cumulative += prob_of(ranked_[i]);
      if (r < cumulative) return id_of(ranked_[i]);
    }
    return id_of(ranked_[n - 1]);  // rounding left r at the very top
  }

 private:
  // A token as one integer that sorts most likely first (descending), ties by id: the
  // probability's bits above (a probability is >= 0, and the bits of floats >= 0 order as
  // the floats do), the id's complement below. Sorting these needs no look-up into probs_,
  // and the order is the same on every platform.
  static uint64_t rank_key(float p, int32_t id) {
    uint32_t bits;
    std::memcpy(&bits, &p, sizeof bits);
    return uint64_t{bits} << 32 | (0xffffffffu - static_cast<uint32_t>(id));
  }
  static float prob_of(uint64_t key) {
    const auto bits = static_cast<uint32_t>(key >> 32);
    float p;
    std::memcpy(&p, &bits, sizeof p);
    return p;
  }
  static int32_t id_of(uint64_t key) { return static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key)); }

  // How many of ranked_[0, m), sorted, it takes for their probability to reach `target`;
  // give_up if all m fall short.
  int reach(int m, int give_up, float target) const {
    float cumulative = 0.f;
    for (int i = 0; i < m; ++i) {
      cumulative += prob_of(ranked_[i]);
      if (cumulative >= target) return i + 1;
    }
    return give_up;
  }

  // Top-p without sorting the vocabulary. The nucleus is a prefix of the tokens sorted most
  // likely first, and no token under (1 - p) * mass / (V - 1) is in it: all of those
  // together hold less than 1 - p of the mass. Of the rest, the m most likely are brought
  // forward (nth_element) and sorted, m growing until they reach p: the prefix a full sort
  // gives, at the cost of sorting about its own length.
  int nucleus() {
    float mass = 0.f;
    for (int i = 0; i < V; ++i) mass += probs_[i];
    const float target = params_.top_p * mass;
    const float floor = 0.5f * (1.f - params_.top_p) * mass / static_cast<float>(V > 1 ? V - 1 : 1);  // half: rounding
    int candidates = 0;
    for (int i = 0; i < V; ++i)
      if (probs_[i] >= floor) ranked_[candidates++] = rank_key(probs_[i], i);
    if (candidates == 0) {  // NaN logits: no probability compares
      ranked_[0] = rank_key(0.f, argmax(probs_, V));
      return 1;
    }
    for (int m = std::min(candidates, 64);; m = std::min(candidates, m * 8)) {
      if (m < candidates) std::nth_element(ranked_, ranked_ + m, ranked_ + candidates, std::greater<>{});
      std::sort(ranked_, ranked_ + m, std::greater<>{});
      if (m == candidates) return reach(m, m, target);  // only rounding can fall short here
      if (const int n = reach(m, 0, target)) return n;
    }
  }

  SamplingParams params_;
  Pcg32 rng_;
  float probs_[V] = {};
  uint64_t ranked_[V] = {};  // rank_key of each token, sorted as far as the filters need
};

}  // namespace moe
