// The MoE sub-block of the trainer's model, forward next to backward: noisy top-k
// routing, expert capacity, each expert on its tokens as one matrix product, the
// gate-weighted combination, and the load-balancing and z losses.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <numeric>

#include "trainer/model.hpp"
#include "trainer/model_acts.hpp"
#include "trainer/ops.hpp"

namespace moe::train {

namespace {
// Experts ordered by tokens received, most first: the order that balances threads best.
std::vector<int> experts_by_load(const std::vector<int>& offset, int E) {
  std::vector<int> order(static_cast<size_t>(E));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) {
    return offset[static_cast<size_t>(x + 1)] - offset[static_cast<size_t>(x)] >
           offset[static_cast<size_t>(y + 1)] - offset[static_cast<size_t>(y)];
  });
  return order;
}

template <class T>
T softplus(T x) {
  return x > T(20) ? x : std::log1p(std::exp(x));
}
template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
constexpr double kLoadNoiseFloor = 1e-2;  // Shazeer et al.'s noise_epsilon in the load estimator

// cv^2(x) = var(x) / (mean(x)^2 + eps) over n values, and its gradient.
double cv_squared(const std::vector<double>& x, std::vector<double>* grad) {
  const double n = static_cast<double>(x.size());
  double mean = 0;
  for (double v : x) mean += v;
  mean /= n;
  double var = 0;
  for (double v : x) var += (v - mean) * (v - mean);
  var /= n;
  const double denom = mean * mean + 1e-10;
  if (grad) {
    grad->resize(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      (*grad)[i] = 2 * (x[i] - mean) / n / denom - var * 2 * mean / n / (denom * denom);
  }
  return var / denom;
}
}  // namespace

// The MoE sub-block on a.ln2 -> a.moe_out: route (noisy top-k), apply capacity, run
// each expert on its tokens as one matrix product, combine by gate weights.
template <class T>
void Model<T>::moe_forward(int l, int N, bool training, uint64_t step) {
  const ModelConfig& m = cfg_.model;
  const int d = m.d_model, E = m.n_experts, K = m.top_k, F = m.expert_hidden, L = m.n_layers;
  const bool classic = m.family == Family::classic;
  LayerActs& a = acts_[static_cast<size_t>(l)];
  const LayerWeights<T>& lw = w_.layers[static_cast<size_t>(l)];

  // Router logits, with Gaussian noise scaled by softplus(noise Linear) when training.
  linear_forward(a.logits.data(), a.ln2.data(), lw.router, classic ? static_cast<const T*>(lw.router_bias) : nullptr, N,
                 d, E);
  a.noisy_forward = training && cfg_.router_noise;
  if (a.noisy_forward) {
    linear_forward(a.noise_logits.data(), a.ln2.data(), lw.noise_w, lw.noise_b, N, d, E);
    const CounterRng rng(cfg_.seed, Stream::router_noise, step * static_cast<uint64_t>(L) + static_cast<uint64_t>(l));
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(N) * E; ++i) {
      a.noise_eps[static_cast<size_t>(i)] = static_cast<T>(rng.normal(static_cast<uint64_t>(i)));
      a.noisy[static_cast<size_t>(i)] =
          a.logits[static_cast<size_t>(i)] +
          a.noise_eps[static_cast<size_t>(i)] * softplus(a.noise_logits[static_cast<size_t>(i)]);
    }
  } else {
    std::copy(a.logits.begin(), a.logits.begin() + static_cast<long>(N) * E, a.noisy.begin());
  }

  // Each token's experts, best first (ties: lower index); gates = softmax over the top k.
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    const T* nz = a.noisy.data() + static_cast<long>(t) * E;
    int* ord = a.order.data() + static_cast<long>(t) * E;
    if (!replay_routing_) {
      std::iota(ord, ord + E, 0);
      std::stable_sort(ord, ord + E, [&](int x, int y) { return nz[x] > nz[y]; });
    }
    T* g = a.gates.data() + static_cast<long>(t) * K;
    T mx = nz[ord[0]];
    for (int j = 1; j < K; ++j) mx = nz[ord[j]] > mx ? nz[ord[j]] : mx;
    T zsum = 0;
    for (int j = 0; j < K; ++j) zsum += (g[j] = std::exp(nz[ord[j]] - mx));
    for (int j = 0; j < K; ++j) g[j] /= zsum;
  }

  // Capacity (makeMoE): each expert takes its first int(N*k/E*factor) tokens, in order.
  const int capacity = cfg_.constants.capacity_factor > 0
                           ? static_cast<int>(static_cast<double>(N * K) / E * cfg_.constants.capacity_factor)
                           : N * K;
  std::vector<long>& routed = stats_.routed[static_cast<size_t>(l)];
  std::vector<long>& kept = stats_.kept[static_cast<size_t>(l)];
  std::fill(routed.begin(), routed.end(), 0);
  std::fill(kept.begin(), kept.end(), 0);
  for (int t = 0; t < N; ++t)
    for (int j = 0; j < K; ++j) {
      const int e = a.order[static_cast<size_t>(t * E + j)];
      ++routed[static_cast<size_t>(e)];
      a.slot[static_cast<size_t>(t * K + j)] =
          kept[static_cast<size_t>(e)] < capacity ? static_cast<int>(kept[static_cast<size_t>(e)]++) : -1;
    }
  a.expert_offset[0] = 0;
  for (int e = 0; e < E; ++e)
    a.expert_offset[static_cast<size_t>(e + 1)] =
        a.expert_offset[static_cast<size_t>(e)] + static_cast<int>(kept[static_cast<size_t>(e)]);
  for (int t = 0; t < N; ++t)
    for (int j = 0; j < K; ++j) {
      int& s = a.slot[static_cast<size_t>(t * K + j)];
      if (s >= 0) {
        s += a.expert_offset[static_cast<size_t>(a.order[static_cast<size_t>(t * E + j)])];
        a.slot_token[static_cast<size_t>(s)] = t;
      }
    }
  const int S = a.expert_offset[static_cast<size_t>(E)];

  // Gather, run each expert on its rows, dropout on the expert outputs.
#pragma omp parallel for schedule(static)
  for (int s = 0; s < S; ++s)
    std::memcpy(a.xin.data() + static_cast<long>(s) * d,
                a.ln2.data() + static_cast<long>(a.slot_token[static_cast<size_t>(s)]) * d,
                sizeof(T) * static_cast<size_t>(d));
  // Experts are independent: each runs its products on one thread, the largest first.
  const std::vector<int> by_load = experts_by_load(a.expert_offset, E);
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < E; ++i) {
    const int e = by_load[static_cast<size_t>(i)];
    const int o = a.expert_offset[static_cast<size_t>(e)], rows = a.expert_offset[static_cast<size_t>(e + 1)] - o;
    if (rows == 0) continue;
    const ExpertWeights<T>& ew = lw.experts[static_cast<size_t>(e)];
    const T* xin = a.xin.data() + static_cast<long>(o) * d;
    T* h1 = a.h1.data() + static_cast<long>(o) * F;
    T* y = a.y.data() + static_cast<long>(o) * d;
    linear_forward(h1, xin, ew.w1, static_cast<const T*>(nullptr), rows, d, F);
    if (classic) {
      bias_relu_forward(h1, ew.b1, rows, F);  // h1 becomes the activation
      linear_forward(y, h1, ew.w2, static_cast<const T*>(ew.b2), rows, F, d);
    } else {
      T* h3 = a.h3.data() + static_cast<long>(o) * F;
      T* z = a.z.data() + static_cast<long>(o) * F;
      linear_forward(h3, xin, ew.w3, static_cast<const T*>(nullptr), rows, d, F);
      swiglu_forward(z, h1, h3, static_cast<long>(rows) * F);
      linear_forward(y, z, ew.w2, static_cast<const T*>(nullptr), rows, F, d);
    }
  }
  const bool drop = training && cfg_.dropout > 0.f;
  if (drop) {
    const uint64_t site = (step * static_cast<uint64_t>(L) + static_cast<uint64_t>(l)) * 4 + 2;
    dropout_mask(a.y_mask.data(), static_cast<long>(S) * d, cfg_.dropout, CounterRng(cfg_.seed, Stream::dropout, site));
  }
#pragma omp parallel for schedule(static)
  for (long i = 0; i < static_cast<long>(S) * d; ++i)
    a.yd[static_cast<size_t>(i)] =
        drop ? a.y[static_cast<size_t>(i)] * a.y_mask[static_cast<size_t>(i)] : a.y[static_cast<size_t>(i)];

    // Combine: each token gets its kept experts' outputs, weighted by their gates.
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    T* out = a.moe_out.data() + static_cast<long>(t) * d;
    for (int i = 0; i < d; ++i) out[i] = 0;
    for (int j = 0; j < K; ++j) {
      const int s = a.slot[static_cast<size_t>(t * K + j)];
      if (s < 0) continue;
      const T g = a.gates[static_cast<size_t>(t * K + j)];
      const T* y = a.yd.data() + static_cast<long>(s) * d;
      for (int i = 0; i < d; ++i) out[i] += g * y[i];
    }
  }

  // Router losses.
  if (cfg_.aux_loss == AuxLoss::switch_transformer) {
    // coef * E * sum_e f_e P_e: f = fraction of choices, P = mean router probability.
    std::vector<double> P(static_cast<size_t>(E), 0.0);
    for (int t = 0; t < N; ++t) {
      const T* nz = a.noisy.data() + static_cast<long>(t) * E;
      T* p = a.probs.data() + static_cast<long>(t) * E;
      T mx = nz[0];
      for (int e = 1; e < E; ++e) mx = nz[e] > mx ? nz[e] : mx;
      T zsum = 0;
      for (int e = 0; e < E; ++e) zsum += (p[e] = std::exp(nz[e] - mx));
      for (int e = 0; e < E; ++e) P[static_cast<size_t>(e)] += static_cast<double>(p[e] /= zsum);
    }
    double aux = 0;
    for (int e = 0; e < E; ++e)
      aux += static_cast<double>(routed[static_cast<size_t>(e)]) / (N * K) * P[static_cast<size_t>(e)] / N;
    stats_.aux += cfg_.aux_coef * E * aux;
  } else if (cfg_.aux_loss == AuxLoss::cv_squared) {
    std::vector<double> importance(static_cast<size_t>(E), 0.0), load(static_cast<size_t>(E), 0.0);
    for (int t = 0; t < N; ++t)
      for (int j = 0; j < K; ++j)
        importance[static_cast<size_t>(a.order[static_cast<size_t>(t * E + j)])] +=
            static_cast<double>(a.gates[static_cast<size_t>(t * K + j)]);
    if (a.noisy_forward) {
      for (int t = 0; t < N; ++t) {
        const int* ord = a.order.data() + static_cast<long>(t) * E;
        const T* nz = a.noisy.data() + static_cast<long>(t) * E;
        std::vector<bool> in(static_cast<size_t>(E), false);
        for (int j = 0; j < K; ++j) in[static_cast<size_t>(ord[j])] = true;
        for (int e = 0; e < E; ++e) {
          const double thr = static_cast<double>(nz[in[static_cast<size_t>(e)] ? ord[K] : ord[K - 1]]);
          const double sigma =
              static_cast<double>(softplus(a.noise_logits[static_cast<size_t>(t * E + e)])) + kLoadNoiseFloor;
          const double zz = (static_cast<double>(a.logits[static_cast<size_t>(t * E + e)]) - thr) / sigma;
          load[static_cast<size_t>(e)] += 0.5 * std::erfc(-zz / std::sqrt(2.0));
        }
      }
    } else {
      for (int e = 0; e < E; ++e) load[static_cast<size_t>(e)] = static_cast<double>(routed[static_cast<size_t>(e)]);
    }
    stats_.aux += cfg_.aux_coef * (cv_squared(importance, nullptr) + cv_squared(load, nullptr));
  }
  if (cfg_.z_loss_coef > 0) {
    double zl = 0;
    for (int t = 0; t < N; ++t) {
      const T* lg = a.logits.data() + static_cast<long>(t) * E;
      T mx = lg[0];
      for (int e = 1; e < E; ++e) mx = lg[e] > mx ? lg[e] : mx;
      T zsum = 0;
      for (int e = 0; e < E; ++e) zsum += std::exp(lg[e] - mx);
      a.lse[static_cast<size_t>(t)] = mx + std::log(zsum);
      zl += static_cast<double>(a.lse[static_cast<size_t>(t)] * a.lse[static_cast<size_t>(t)]);
    }
    stats_.z += cfg_.z_loss_coef * zl / N;
  }
}

template <class T>
void Model<T>::moe_backward(int l, int N, T* dln2) {
  const ModelConfig& m = cfg_.model;
  const int d = m.d_model, E = m.n_experts, K = m.top_k, F = m.expert_hidden;
  const bool classic = m.family == Family::classic;
  const bool drop = training_ && cfg_.dropout > 0.f;
  LayerActs& a = acts_[static_cast<size_t>(l)];
  const LayerWeights<T>& lw = w_.layers[static_cast<size_t>(l)];
  LayerWeights<T>& gw = g_.layers[static_cast<size_t>(l)];
  const T* dmoe = dres_.data();

  // Combine backward: d(expert output) = gate * dmoe; d gate = <dmoe, expert output>.
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    const T* go = dmoe + static_cast<long>(t) * d;
    for (int j = 0; j < K; ++j) {
      const int s = a.slot[static_cast<size_t>(t * K + j)];
      T dg = 0;
      if (s >= 0) {
        const T g = a.gates[static_cast<size_t>(t * K + j)];
        const T* y = a.yd.data() + static_cast<long>(s) * d;
        T* dy = d_slot_d_.data() + static_cast<long>(s) * d;
        for (int i = 0; i < d; ++i) {
          dg += go[i] * y[i];
          dy[i] = g * go[i] * (drop ? a.y_mask[static_cast<size_t>(static_cast<long>(s) * d + i)] : T(1));
        }
      }
      dgate_[static_cast<size_t>(t * K + j)] = dg;
    }
  }

  // Experts, concurrently as in the forward pass.
  const std::vector<int> by_load = experts_by_load(a.expert_offset, E);
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < E; ++i) {
    const int e = by_load[static_cast<size_t>(i)];
    const int o = a.expert_offset[static_cast<size_t>(e)], rows = a.expert_offset[static_cast<size_t>(e + 1)] - o;
    const ExpertWeights<T>& ew = lw.experts[static_cast<size_t>(e)];
    ExpertWeights<T>& eg = gw.experts[static_cast<size_t>(e)];
    if (rows == 0) {  // no token reached this expert: its gradient is zero
      std::fill(eg.w1, eg.w1 + static_cast<long>(F) * d, T(0));
      std::fill(eg.w2, eg.w2 + static_cast<long>(d) * F, T(0));
      if (classic) {
        std::fill(eg.b1, eg.b1 + F, T(0));
        std::fill(eg.b2, eg.b2 + d, T(0));
      } else {
        std::fill(eg.w3, eg.w3 + static_cast<long>(F) * d, T(0));
      }
      continue;
    }
    const T* xin = a.xin.data() + static_cast<long>(o) * d;
    const T* dy = d_slot_d_.data() + static_cast<long>(o) * d;
    T* dz = d_slot_f_.data() + static_cast<long>(o) * F;
    T* dxin = d_slot_in_.data() + static_cast<long>(o) * d;
    if (classic) {
      const T* hid = a.h1.data() + static_cast<long>(o) * F;
      linear_backward(dz, false, eg.w2, eg.b2, dy, hid, ew.w2, rows, F, d);
      relu_backward(dz, hid, static_cast<long>(rows) * F);
      linear_backward(dxin, false, eg.w1, eg.b1, dz, xin, ew.w1, rows, d, F);
    } else {
      const T* h1 = a.h1.data() + static_cast<long>(o) * F;
      const T* h3 = a.h3.data() + static_cast<long>(o) * F;
      const T* z = a.z.data() + static_cast<long>(o) * F;
      T* du = d_slot_f2_.data() + static_cast<long>(o) * F;
      linear_backward(dz, false, eg.w2, static_cast<T*>(nullptr), dy, z, ew.w2, rows, F, d);
      swiglu_backward(dz, du, dz, h1, h3, static_cast<long>(rows) * F);  // dz becomes d gate
      linear_backward(dxin, false, eg.w1, static_cast<T*>(nullptr), dz, xin, ew.w1, rows, d, F);
      linear_backward(dxin, true, eg.w3, static_cast<T*>(nullptr), du, xin, ew.w3, rows, d, F);
    }
  }

  // Scatter the experts' input gradients back to their tokens.
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    T* out = dln2 + static_cast<long>(t) * d;
    for (int i = 0; i < d; ++i) out[i] = 0;
    for (int j = 0; j < K; ++j) {
      const int s = a.slot[static_cast<size_t>(t * K + j)];
      if (s < 0) continue;
      const T* g = d_slot_in_.data() + static_cast<long>(s) * d;
      for (int i = 0; i < d; ++i) out[i] += g[i];
    }
  }

  // Router losses feed the gates (importance) and the logits (everything else).
  std::fill(dnoisy_.begin(), dnoisy_.begin() + static_cast<long>(N) * E, T(0));
  std::fill(drouter_.begin(), drouter_.begin() + static_cast<long>(N) * E, T(0));
  std::fill(dnoise_.begin(), dnoise_.begin() + static_cast<long>(N) * E, T(0));
  const std::vector<long>& routed = stats_.routed[static_cast<size_t>(l)];
  if (cfg_.aux_loss == AuxLoss::cv_squared) {
    std::vector<double> importance(static_cast<size_t>(E), 0.0), load(static_cast<size_t>(E), 0.0), gi, gl;
    for (int t = 0; t < N; ++t)
      for (int j = 0; j < K; ++j)
        importance[static_cast<size_t>(a.order[static_cast<size_t>(t * E + j)])] +=
            static_cast<double>(a.gates[static_cast<size_t>(t * K + j)]);
    cv_squared(importance, &gi);
    for (int t = 0; t < N; ++t)
      for (int j = 0; j < K; ++j)
        dgate_[static_cast<size_t>(t * K + j)] +=
            static_cast<T>(cfg_.aux_coef * gi[static_cast<size_t>(a.order[static_cast<size_t>(t * E + j)])]);
    if (a.noisy_forward) {
      // load_e = sum_t Phi((clean_te - threshold_te) / sigma_te)
      std::vector<double> zs(static_cast<size_t>(N) * E), sig(zs.size());
      std::vector<int> thr_e(zs.size());
      for (int t = 0; t < N; ++t) {
        const int* ord = a.order.data() + static_cast<long>(t) * E;
        std::vector<bool> in(static_cast<size_t>(E), false);
        for (int j = 0; j < K; ++j) in[static_cast<size_t>(ord[j])] = true;
        for (int e = 0; e < E; ++e) {
          const size_t i = static_cast<size_t>(t * E + e);
          thr_e[i] = in[static_cast<size_t>(e)] ? ord[K] : ord[K - 1];
          sig[i] = static_cast<double>(softplus(a.noise_logits[i])) + kLoadNoiseFloor;
          zs[i] =
              (static_cast<double>(a.logits[i]) - static_cast<double>(a.noisy[static_cast<size_t>(t * E + thr_e[i])])) /
              sig[i];
          load[static_cast<size_t>(e)] += 0.5 * std::erfc(-zs[i] / std::sqrt(2.0));
        }
      }
      cv_squared(load, &gl);
      for (int t = 0; t < N; ++t)
        for (int e = 0; e < E; ++e) {
          const size_t i = static_cast<size_t>(t * E + e);
          const double dprob = cfg_.aux_coef * gl[static_cast<size_t>(e)];
          const double phi = std::exp(-0.5 * zs[i] * zs[i]) / std::sqrt(2 * std::numbers::pi);
          drouter_[i] += static_cast<T>(dprob * phi / sig[i]);
          dnoisy_[static_cast<size_t>(t * E + thr_e[i])] -= static_cast<T>(dprob * phi / sig[i]);
          dnoise_[i] -= static_cast<T>(dprob * phi * zs[i] / sig[i] * static_cast<double>(sigmoid(a.noise_logits[i])));
        }
    }
  }

  // Gates: softmax over the k chosen noisy logits.
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; ++t) {
    const T* g = a.gates.data() + static_cast<long>(t) * K;
    const T* dg = dgate_.data() + static_cast<long>(t) * K;
    T dot = 0;
    for (int j = 0; j < K; ++j) dot += g[j] * dg[j];
    for (int j = 0; j < K; ++j)
      dnoisy_[static_cast<size_t>(t * E + a.order[static_cast<size_t>(t * E + j)])] += g[j] * (dg[j] - dot);
  }
  if (cfg_.aux_loss == AuxLoss::switch_transformer) {
    const double c = cfg_.aux_coef * E / N;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; ++t) {
      const T* p = a.probs.data() + static_cast<long>(t) * E;
      double fp = 0;
      for (int e = 0; e < E; ++e)
        fp += static_cast<double>(routed[static_cast<size_t>(e)]) / (N * K) * static_cast<double>(p[e]);
      for (int e = 0; e < E; ++e)
        dnoisy_[static_cast<size_t>(t * E + e)] += static_cast<T>(
            c * static_cast<double>(p[e]) * (static_cast<double>(routed[static_cast<size_t>(e)]) / (N * K) - fp));
    }
  }
  // noisy = logits + eps * softplus(noise_logits)
#pragma omp parallel for schedule(static)
  for (long i = 0; i < static_cast<long>(N) * E; ++i) {
    drouter_[static_cast<size_t>(i)] += dnoisy_[static_cast<size_t>(i)];
    if (a.noisy_forward)
      dnoise_[static_cast<size_t>(i)] += dnoisy_[static_cast<size_t>(i)] * a.noise_eps[static_cast<size_t>(i)] *
                                         sigmoid(a.noise_logits[static_cast<size_t>(i)]);
  }
  if (cfg_.z_loss_coef > 0) {
    const T c = static_cast<T>(2.0 * cfg_.z_loss_coef / N);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; ++t) {
      const T* lg = a.logits.data() + static_cast<long>(t) * E;
      const T lse = a.lse[static_cast<size_t>(t)];
      for (int e = 0; e < E; ++e) drouter_[static_cast<size_t>(t * E + e)] += c * lse * std::exp(lg[e] - lse);
    }
  }
  linear_backward(dln2, true, gw.router, classic ? gw.router_bias : nullptr, drouter_.data(), a.ln2.data(), lw.router,
                  N, d, E);
  if (cfg_.router_noise) {
    if (a.noisy_forward) {
      linear_backward(dln2, true, gw.noise_w, gw.noise_b, dnoise_.data(), a.ln2.data(), lw.noise_w, N, d, E);
    } else {
      std::fill(gw.noise_w, gw.noise_w + static_cast<long>(E) * d, T(0));
      std::fill(gw.noise_b, gw.noise_b + E, T(0));
    }
  }
}

template <class T>
const T* Model<T>::moe_input(int l) const {
  return acts_[static_cast<size_t>(l)].ln2.data();
}

template <class T>
int Model<T>::first_choice(int l, int n) const {
  return acts_[static_cast<size_t>(l)].order[static_cast<size_t>(n) * static_cast<size_t>(cfg_.model.n_experts)];
}

template void Model<float>::moe_forward(int, int, bool, uint64_t);
template void Model<double>::moe_forward(int, int, bool, uint64_t);
template void Model<float>::moe_backward(int, int, float*);
template void Model<double>::moe_backward(int, int, double*);
template const float* Model<float>::moe_input(int) const;
template const double* Model<double>::moe_input(int) const;
template int Model<float>::first_choice(int, int) const;
template int Model<double>::first_choice(int, int) const;

}  // namespace moe::train
