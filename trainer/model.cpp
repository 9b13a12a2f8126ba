#include "trainer/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <numeric>
#include <stdexcept>

#include "trainer/ops.hpp"

namespace moe::train {

// ---- parameter layout --------------------------------------------------------------------

std::string ParamInfo::name() const {
  char buf[128];
  if (noise) {
    std::snprintf(buf, sizeof buf, "router noise %s of layer %d", spec.is_matrix() ? "weight" : "bias", spec.layer);
    return buf;
  }
  describe_tensor(spec.role, spec.layer, spec.expert, buf, sizeof buf);
  return buf;
}

namespace {
bool decayable(const ParamInfo& p) {
  return p.spec.is_matrix() && p.spec.role != TensorRole::token_embedding && p.spec.role != TensorRole::position_embedding;
}
}  // namespace

std::vector<ParamInfo> parameter_table(const TrainConfig& c) {
  std::vector<ParamInfo> all;
  for_each_tensor_spec(c.model, [&](const TensorSpec& s) { all.push_back(ParamInfo{s, false, 0, 0}); });
  if (c.router_noise) {
    for (int l = 0; l < c.model.n_layers; ++l) {
      all.push_back(ParamInfo{TensorSpec{TensorRole::router, l, -1, c.model.n_experts, c.model.d_model, TensorClass::f32_only}, true, 0, 0});
      all.push_back(ParamInfo{TensorSpec{TensorRole::router_bias, l, -1, c.model.n_experts, 0, TensorClass::f32_only}, true, 0, 0});
    }
  }
  // Weight-decay candidates first, so the decayed parameters are one prefix of the buffer.
  std::stable_partition(all.begin(), all.end(), decayable);
  long offset = 0;
  for (ParamInfo& p : all) {
    p.offset = offset;
    p.size = p.spec.elements();
    offset += p.size;
  }
  return all;
}

long parameter_count(const std::vector<ParamInfo>& table) {
  return table.empty() ? 0 : table.back().offset + table.back().size;
}

long decayed_prefix(const std::vector<ParamInfo>& table, bool decay_everything) {
  if (decay_everything) return parameter_count(table);
  long n = 0;
  for (const ParamInfo& p : table)
    if (decayable(p)) n = p.offset + p.size;
  return n;
}

template <class T>
void Weights<T>::bind(T* base, const std::vector<ParamInfo>& table, const ModelConfig& c) {
  layers.assign(static_cast<size_t>(c.n_layers), LayerWeights<T>{});
  for (auto& l : layers) l.experts.assign(static_cast<size_t>(c.n_experts), ExpertWeights<T>{});
  for (const ParamInfo& p : table) {
    T* at = base + p.offset;
    if (p.noise) {
      LayerWeights<T>& lw = layers[static_cast<size_t>(p.spec.layer)];
      (p.spec.is_matrix() ? lw.noise_w : lw.noise_b) = at;
      continue;
    }
    with_weight_slot(*this, p.spec, [&](T*& slot) { slot = at; });
  }
}

// ---- activations ---------------------------------------------------------------------------

template <class T>
struct Model<T>::LayerActs {
  std::vector<T> ln1, ln1_mean, ln1_rstd, qkv /* [N, q|k|v] */, att, att_mask, atty, proj, proj_mask, xmid;
  std::vector<T> ln2, ln2_mean, ln2_rstd;
  // router: [N, E] unless noted
  std::vector<T> logits, noise_logits, noise_eps, noisy, probs, lse /* [N] */;
  std::vector<int> order;            // [N, E] experts by noisy logit, best first
  std::vector<T> gates;              // [N, k] softmax over the k chosen noisy logits
  std::vector<int> slot;             // [N, k] expert slot of each choice, -1 if over capacity
  std::vector<int> expert_offset;    // [E + 1] first slot of each expert
  std::vector<int> slot_token;       // [S] token of each slot
  // experts, one row per slot: [S, d] or [S, F]
  std::vector<T> xin, h1, h3, z, y, y_mask, yd;
  std::vector<T> moe_out;            // [N, d]
  bool noisy_forward = false;
};

template <class T>
Model<T>::Model(const TrainConfig& config, int max_batch) : cfg_(config) {
  const std::string why = cfg_.problem();
  if (!why.empty()) throw std::invalid_argument(why);
  const ModelConfig& m = cfg_.model;
  if (m.max_context > 4096) throw std::invalid_argument("the trainer supports blocks of at most 4096 tokens");
  table_ = parameter_table(cfg_);
  params.assign(static_cast<size_t>(parameter_count(table_)), T(0));
  grads.assign(params.size(), T(0));
  w_.bind(params.data(), table_, m);
  g_.bind(grads.data(), table_, m);
  // The layout keeps each layer's wq, wk, wv adjacent: one [q|k|v, d] matrix, one product.
  for (const LayerWeights<T>& lw : w_.layers)
    if (lw.wk != lw.wq + static_cast<long>(m.q_dim()) * m.d_model || lw.wv != lw.wk + static_cast<long>(m.kv_dim()) * m.d_model)
      throw std::logic_error("parameter layout: wq, wk, wv must be adjacent");

  max_tokens_ = max_batch * m.max_context;
  const size_t N = static_cast<size_t>(max_tokens_), d = static_cast<size_t>(m.d_model), E = static_cast<size_t>(m.n_experts);
  const size_t K = static_cast<size_t>(m.top_k), F = static_cast<size_t>(m.expert_hidden), S = N * K;
  const size_t QD = static_cast<size_t>(m.q_dim()), KVD = static_cast<size_t>(m.kv_dim());
  const size_t att = static_cast<size_t>(max_batch) * static_cast<size_t>(m.n_heads) * static_cast<size_t>(m.max_context) *
                     static_cast<size_t>(m.max_context);
  acts_.resize(static_cast<size_t>(m.n_layers));
  for (LayerActs& a : acts_) {
    for (auto* v : {&a.ln1, &a.proj, &a.proj_mask, &a.xmid, &a.ln2, &a.moe_out}) v->resize(N * d);
    for (auto* v : {&a.ln1_mean, &a.ln1_rstd, &a.ln2_mean, &a.ln2_rstd, &a.lse}) v->resize(N);
    a.qkv.resize(N * (QD + 2 * KVD));
    a.atty.resize(N * QD);
    a.att.resize(att);
    a.att_mask.resize(att);
    for (auto* v : {&a.logits, &a.noise_logits, &a.noise_eps, &a.noisy, &a.probs}) v->resize(N * E);
    a.order.resize(N * E);
    a.gates.resize(N * K);
    a.slot.resize(N * K);
    a.expert_offset.resize(E + 1);
    a.slot_token.resize(S);
    for (auto* v : {&a.xin, &a.y, &a.y_mask, &a.yd}) v->resize(S * d);
    a.h1.resize(S * F);
    if (m.gated_experts()) {
      a.h3.resize(S * F);
      a.z.resize(S * F);
    }
  }
  resid_.resize((static_cast<size_t>(m.n_layers) + 1) * N * d);
  lnf_.resize(N * d);
  lnf_mean_.resize(N);
  lnf_rstd_.resize(N);
  logits_.resize(N * static_cast<size_t>(m.vocab_size));
  probs_.resize(logits_.size());
  dlogits_.resize(logits_.size());
  token_losses_.resize(N);
  for (auto* v : {&dres_, &dln_, &dproj_}) v->resize(N * d);
  dqkv_.resize(N * (QD + 2 * KVD));
  datt_.resize(N * QD);
  d_slot_d_.resize(S * d);
  d_slot_in_.resize(S * d);
  d_slot_f_.resize(S * F);
  d_slot_f2_.resize(S * F);
  dgate_.resize(N * K);
  for (auto* v : {&dnoisy_, &drouter_, &dnoise_}) v->resize(N * E);
  stats_.routed.assign(static_cast<size_t>(m.n_layers), std::vector<long>(E, 0));
  stats_.kept = stats_.routed;
}

template <class T>
Model<T>::~Model() = default;

// ---- initialisation -----------------------------------------------------------------------

template <class T>
void Model<T>::init_params(uint64_t seed) {
  const ModelConfig& m = cfg_.model;
  const bool classic = m.family == Family::classic;
  for (size_t p = 0; p < table_.size(); ++p) {
    const ParamInfo& info = table_[p];
    const CounterRng rng(seed, Stream::init, p);
    T* dst = params.data() + info.offset;
    const TensorRole r = info.spec.role;
    const bool norm = !info.noise && (r == TensorRole::attn_norm || r == TensorRole::ffn_norm || r == TensorRole::final_norm);
    const bool norm_bias = r == TensorRole::attn_norm_bias || r == TensorRole::ffn_norm_bias || r == TensorRole::final_norm_bias;
    const bool embedding = r == TensorRole::token_embedding || r == TensorRole::position_embedding;
    for (long i = 0; i < info.size; ++i) {
      double v;
      if (norm) v = 1.0;
      else if (norm_bias) v = 0.0;
      else if (!classic) v = info.spec.is_matrix() ? 0.02 * rng.normal(static_cast<uint64_t>(i)) : 0.0;  // Mixtral
      else if (embedding) v = rng.normal(static_cast<uint64_t>(i));                                       // nn.Embedding
      else if (info.spec.is_matrix()) v = std::sqrt(2.0 / info.spec.cols) * rng.normal(static_cast<uint64_t>(i));  // kaiming_normal_
      else {
        // nn.Linear's bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = its weight's columns.
        const int fan_in = r == TensorRole::expert_b2 ? m.expert_hidden : r == TensorRole::wo_bias ? m.q_dim() : m.d_model;
        v = (2 * rng.uniform(static_cast<uint64_t>(i)) - 1) / std::sqrt(static_cast<double>(fan_in));
      }
      dst[i] = static_cast<T>(v);
    }
  }
}

// ---- forward ------------------------------------------------------------------------------

template <class T>
double Model<T>::forward(const int32_t* inputs, const int32_t* targets, int B, int T_len, bool training, uint64_t step) {
  const ModelConfig& m = cfg_.model;
  if (B * T_len > max_tokens_ || T_len > m.max_context || B <= 0 || T_len <= 0)
    throw std::invalid_argument("batch larger than the model was built for");
  B_ = B;
  T_ = T_len;
  training_ = training;
  inputs_ = inputs;
  targets_ = targets;
  const int N = B * T_len, d = m.d_model, L = m.n_layers, V = m.vocab_size;
  const bool classic = m.family == Family::classic;
  const bool drop = training && cfg_.dropout > 0.f;
  stats_.aux = stats_.z = 0;

  // Embeddings (+ learned positions for the classic family).
  T* x0 = resid_.data();
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const T* te = w_.token_embedding + static_cast<long>(inputs[n]) * d;
    T* x = x0 + static_cast<long>(n) * d;
    for (int i = 0; i < d; ++i) x[i] = te[i];
    if (classic)
      for (int i = 0; i < d; ++i) x[i] += w_.position_embedding[static_cast<long>(n % T_len) * d + i];
  }

  const int qkv_dim = m.q_dim() + 2 * m.kv_dim();
  const AttentionShape shape{B, T_len, m.n_heads, m.n_kv_heads, m.head_dim, qkv_dim, qkv_dim, m.q_dim(),
                             attention_factor(m, cfg_.constants.attention_scale)};
  const long att_size = static_cast<long>(B) * m.n_heads * T_len * T_len;
  for (int l = 0; l < L; ++l) {
    LayerActs& a = acts_[static_cast<size_t>(l)];
    const LayerWeights<T>& lw = w_.layers[static_cast<size_t>(l)];
    const T* x = resid_.data() + static_cast<long>(l) * max_tokens_ * d;
    T* x_next = resid_.data() + static_cast<long>(l + 1) * max_tokens_ * d;
    // attention sub-block: x_mid = x + dropout(Wo attention(norm(x)))
    if (classic) layernorm_forward(a.ln1.data(), a.ln1_mean.data(), a.ln1_rstd.data(), x, lw.attn_norm, lw.attn_norm_bias, N, d, T(cfg_.constants.norm_eps));
    else rmsnorm_forward(a.ln1.data(), a.ln1_rstd.data(), x, lw.attn_norm, N, d, T(cfg_.constants.norm_eps));
    T* q = a.qkv.data();
    T* k = q + m.q_dim();
    T* v = k + m.kv_dim();
    linear_forward(q, a.ln1.data(), lw.wq, static_cast<const T*>(nullptr), N, d, qkv_dim);
    if (!classic) {
      rope_forward(q, N, T_len, m.n_heads, m.head_dim, qkv_dim, cfg_.constants.rope_theta, false);
      rope_forward(k, N, T_len, m.n_kv_heads, m.head_dim, qkv_dim, cfg_.constants.rope_theta, false);
    }
    const uint64_t site = (step * static_cast<uint64_t>(L) + static_cast<uint64_t>(l)) * 4;
    if (drop) dropout_mask(a.att_mask.data(), att_size, cfg_.dropout, CounterRng(cfg_.seed, Stream::dropout, site + 0));
    attention_forward(a.atty.data(), a.att.data(), drop ? a.att_mask.data() : static_cast<const T*>(nullptr), q, k, v, shape);
    linear_forward(a.proj.data(), a.atty.data(), lw.wo, classic ? static_cast<const T*>(lw.wo_bias) : nullptr, N, m.q_dim(), d);
    if (drop) dropout_mask(a.proj_mask.data(), static_cast<long>(N) * d, cfg_.dropout, CounterRng(cfg_.seed, Stream::dropout, site + 1));
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(N) * d; ++i) a.xmid[static_cast<size_t>(i)] = x[i] + (drop ? a.proj[static_cast<size_t>(i)] * a.proj_mask[static_cast<size_t>(i)] : a.proj[static_cast<size_t>(i)]);
    // MoE sub-block: x_next = x_mid + moe(norm(x_mid))
    if (classic) layernorm_forward(a.ln2.data(), a.ln2_mean.data(), a.ln2_rstd.data(), a.xmid.data(), lw.ffn_norm, lw.ffn_norm_bias, N, d, T(cfg_.constants.norm_eps));
    else rmsnorm_forward(a.ln2.data(), a.ln2_rstd.data(), a.xmid.data(), lw.ffn_norm, N, d, T(cfg_.constants.norm_eps));
    moe_forward(l, N, training, step);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(N) * d; ++i) x_next[i] = a.xmid[static_cast<size_t>(i)] + a.moe_out[static_cast<size_t>(i)];
  }

  const T* xL = resid_.data() + static_cast<long>(L) * max_tokens_ * d;
  if (classic) layernorm_forward(lnf_.data(), lnf_mean_.data(), lnf_rstd_.data(), xL, w_.final_norm, w_.final_norm_bias, N, d, T(cfg_.constants.norm_eps));
  else rmsnorm_forward(lnf_.data(), lnf_rstd_.data(), xL, w_.final_norm, N, d, T(cfg_.constants.norm_eps));
  linear_forward(logits_.data(), lnf_.data(), w_.lm_head, classic ? static_cast<const T*>(w_.lm_head_bias) : nullptr, N, d, V);
  stats_.ce = targets ? crossentropy_forward(probs_.data(), token_losses_.data(), logits_.data(), targets, N, V) : 0.0;
  return targets ? stats_.total() : 0.0;
}

namespace {
// Experts ordered by tokens received, most first: the order that balances threads best.
std::vector<int> experts_by_load(const std::vector<int>& offset, int E) {
  std::vector<int> order(static_cast<size_t>(E));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) {
    return offset[static_cast<size_t>(x + 1)] - offset[static_cast<size_t>(x)] > offset[static_cast<size_t>(y + 1)] - offset[static_cast<size_t>(y)];
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
    for (size_t i = 0; i < x.size(); ++i) (*grad)[i] = 2 * (x[i] - mean) / n / denom - var * 2 * mean / n / (denom * denom);
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
  linear_forward(a.logits.data(), a.ln2.data(), lw.router, classic ? static_cast<const T*>(lw.router_bias) : nullptr, N, d, E);
  a.noisy_forward = training && cfg_.router_noise;
  if (a.noisy_forward) {
    linear_forward(a.noise_logits.data(), a.ln2.data(), lw.noise_w, lw.noise_b, N, d, E);
    const CounterRng rng(cfg_.seed, Stream::router_noise, step * static_cast<uint64_t>(L) + static_cast<uint64_t>(l));
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(N) * E; ++i) {
      a.noise_eps[static_cast<size_t>(i)] = static_cast<T>(rng.normal(static_cast<uint64_t>(i)));
      a.noisy[static_cast<size_t>(i)] = a.logits[static_cast<size_t>(i)] + a.noise_eps[static_cast<size_t>(i)] * softplus(a.noise_logits[static_cast<size_t>(i)]);
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
  const int capacity = cfg_.constants.capacity_factor > 0 ? static_cast<int>(static_cast<double>(N * K) / E * cfg_.constants.capacity_factor) : N * K;
  std::vector<long>& routed = stats_.routed[static_cast<size_t>(l)];
  std::vector<long>& kept = stats_.kept[static_cast<size_t>(l)];
  std::fill(routed.begin(), routed.end(), 0);
  std::fill(kept.begin(), kept.end(), 0);
  for (int t = 0; t < N; ++t)
    for (int j = 0; j < K; ++j) {
      const int e = a.order[static_cast<size_t>(t * E + j)];
      ++routed[static_cast<size_t>(e)];
      a.slot[static_cast<size_t>(t * K + j)] = kept[static_cast<size_t>(e)] < capacity ? static_cast<int>(kept[static_cast<size_t>(e)]++) : -1;
    }
  a.expert_offset[0] = 0;
  for (int e = 0; e < E; ++e) a.expert_offset[static_cast<size_t>(e + 1)] = a.expert_offset[static_cast<size_t>(e)] + static_cast<int>(kept[static_cast<size_t>(e)]);
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
    std::memcpy(a.xin.data() + static_cast<long>(s) * d, a.ln2.data() + static_cast<long>(a.slot_token[static_cast<size_t>(s)]) * d, sizeof(T) * static_cast<size_t>(d));
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
  for (long i = 0; i < static_cast<long>(S) * d; ++i) a.yd[static_cast<size_t>(i)] = drop ? a.y[static_cast<size_t>(i)] * a.y_mask[static_cast<size_t>(i)] : a.y[static_cast<size_t>(i)];

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
    for (int e = 0; e < E; ++e) aux += static_cast<double>(routed[static_cast<size_t>(e)]) / (N * K) * P[static_cast<size_t>(e)] / N;
    stats_.aux += cfg_.aux_coef * E * aux;
  } else if (cfg_.aux_loss == AuxLoss::cv_squared) {
    std::vector<double> importance(static_cast<size_t>(E), 0.0), load(static_cast<size_t>(E), 0.0);
    for (int t = 0; t < N; ++t)
      for (int j = 0; j < K; ++j) importance[static_cast<size_t>(a.order[static_cast<size_t>(t * E + j)])] += static_cast<double>(a.gates[static_cast<size_t>(t * K + j)]);
    if (a.noisy_forward) {
      for (int t = 0; t < N; ++t) {
        const int* ord = a.order.data() + static_cast<long>(t) * E;
        const T* nz = a.noisy.data() + static_cast<long>(t) * E;
        std::vector<bool> in(static_cast<size_t>(E), false);
        for (int j = 0; j < K; ++j) in[static_cast<size_t>(ord[j])] = true;
        for (int e = 0; e < E; ++e) {
          const double thr = static_cast<double>(nz[in[static_cast<size_t>(e)] ? ord[K] : ord[K - 1]]);
          const double sigma = static_cast<double>(softplus(a.noise_logits[static_cast<size_t>(t * E + e)])) + kLoadNoiseFloor;
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

// ---- backward -----------------------------------------------------------------------------

template <class T>
void Model<T>::backward() {
  const ModelConfig& m = cfg_.model;
  const int N = B_ * T_, d = m.d_model, L = m.n_layers, V = m.vocab_size, T_len = T_;
  const bool classic = m.family == Family::classic;
  const bool drop = training_ && cfg_.dropout > 0.f;
  if (targets_ == nullptr) throw std::logic_error("backward needs a forward with targets");

  crossentropy_backward(dlogits_.data(), probs_.data(), targets_, N, V);
  linear_backward(dln_.data(), false, g_.lm_head, classic ? g_.lm_head_bias : nullptr, dlogits_.data(), lnf_.data(), w_.lm_head, N, d, V);
  std::fill(dres_.begin(), dres_.begin() + static_cast<long>(N) * d, T(0));
  const T* xL = resid_.data() + static_cast<long>(L) * max_tokens_ * d;
  if (classic) layernorm_backward(dres_.data(), g_.final_norm, g_.final_norm_bias, dln_.data(), xL, w_.final_norm, lnf_mean_.data(), lnf_rstd_.data(), N, d);
  else rmsnorm_backward(dres_.data(), g_.final_norm, dln_.data(), xL, w_.final_norm, lnf_rstd_.data(), N, d);

  const int qkv_dim = m.q_dim() + 2 * m.kv_dim();
  const AttentionShape shape{B_, T_len, m.n_heads, m.n_kv_heads, m.head_dim, qkv_dim, qkv_dim, m.q_dim(),
                             attention_factor(m, cfg_.constants.attention_scale)};
  for (int l = L - 1; l >= 0; --l) {
    LayerActs& a = acts_[static_cast<size_t>(l)];
    const LayerWeights<T>& lw = w_.layers[static_cast<size_t>(l)];
    LayerWeights<T>& gw = g_.layers[static_cast<size_t>(l)];
    const T* x = resid_.data() + static_cast<long>(l) * max_tokens_ * d;
    // x_next = x_mid + moe(norm2(x_mid)): dres is d x_next
    moe_backward(l, N, dln_.data());
    if (classic) layernorm_backward(dres_.data(), gw.ffn_norm, gw.ffn_norm_bias, dln_.data(), a.xmid.data(), lw.ffn_norm, a.ln2_mean.data(), a.ln2_rstd.data(), N, d);
    else rmsnorm_backward(dres_.data(), gw.ffn_norm, dln_.data(), a.xmid.data(), lw.ffn_norm, a.ln2_rstd.data(), N, d);
    // dres is now d x_mid; x_mid = x + dropout(Wo attention(norm1(x)))
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(N) * d; ++i) dproj_[static_cast<size_t>(i)] = drop ? dres_[static_cast<size_t>(i)] * a.proj_mask[static_cast<size_t>(i)] : dres_[static_cast<size_t>(i)];
    linear_backward(datt_.data(), false, gw.wo, classic ? gw.wo_bias : nullptr, dproj_.data(), a.atty.data(), lw.wo, N, m.q_dim(), d);
    const T* q = a.qkv.data();
    T* dq = dqkv_.data();
    attention_backward(dq, dq + m.q_dim(), dq + m.q_dim() + m.kv_dim(), datt_.data(), a.att.data(),
                       drop ? a.att_mask.data() : static_cast<const T*>(nullptr), q, q + m.q_dim(), q + m.q_dim() + m.kv_dim(), shape);
    if (!classic) {
      rope_backward(dq, N, T_len, m.n_heads, m.head_dim, qkv_dim, cfg_.constants.rope_theta);
      rope_backward(dq + m.q_dim(), N, T_len, m.n_kv_heads, m.head_dim, qkv_dim, cfg_.constants.rope_theta);
    }
    // One product for wq|wk|wv (adjacent in both buffers).
    linear_backward(dln_.data(), false, gw.wq, static_cast<T*>(nullptr), dq, a.ln1.data(), lw.wq, N, d, qkv_dim);
    if (classic) layernorm_backward(dres_.data(), gw.attn_norm, gw.attn_norm_bias, dln_.data(), x, lw.attn_norm, a.ln1_mean.data(), a.ln1_rstd.data(), N, d);
    else rmsnorm_backward(dres_.data(), gw.attn_norm, dln_.data(), x, lw.attn_norm, a.ln1_rstd.data(), N, d);
  }

  // Embeddings: token rows accumulate (a token may appear many times), positions sum over the batch.
  std::fill(g_.token_embedding, g_.token_embedding + static_cast<long>(V) * d, T(0));
  for (int n = 0; n < N; ++n) {
    T* row = g_.token_embedding + static_cast<long>(inputs_[n]) * d;
    const T* g = dres_.data() + static_cast<long>(n) * d;
    for (int i = 0; i < d; ++i) row[i] += g[i];
  }
  if (classic) {
    std::fill(g_.position_embedding, g_.position_embedding + static_cast<long>(m.max_context) * d, T(0));
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T_len; ++t)
      for (int b = 0; b < B_; ++b)
        for (int i = 0; i < d; ++i) g_.position_embedding[static_cast<long>(t) * d + i] += dres_[static_cast<size_t>((b * T_len + t) * d + i)];
  }
}

// dres = d moe_out; writes dln2 = d ln2 (through the experts and the router).
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
      for (int j = 0; j < K; ++j) importance[static_cast<size_t>(a.order[static_cast<size_t>(t * E + j)])] += static_cast<double>(a.gates[static_cast<size_t>(t * K + j)]);
    cv_squared(importance, &gi);
    for (int t = 0; t < N; ++t)
      for (int j = 0; j < K; ++j) dgate_[static_cast<size_t>(t * K + j)] += static_cast<T>(cfg_.aux_coef * gi[static_cast<size_t>(a.order[static_cast<size_t>(t * E + j)])]);
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
          zs[i] = (static_cast<double>(a.logits[i]) - static_cast<double>(a.noisy[static_cast<size_t>(t * E + thr_e[i])])) / sig[i];
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
    for (int j = 0; j < K; ++j) dnoisy_[static_cast<size_t>(t * E + a.order[static_cast<size_t>(t * E + j)])] += g[j] * (dg[j] - dot);
  }
  if (cfg_.aux_loss == AuxLoss::switch_transformer) {
    const double c = cfg_.aux_coef * E / N;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; ++t) {
      const T* p = a.probs.data() + static_cast<long>(t) * E;
      double fp = 0;
      for (int e = 0; e < E; ++e) fp += static_cast<double>(routed[static_cast<size_t>(e)]) / (N * K) * static_cast<double>(p[e]);
      for (int e = 0; e < E; ++e)
        dnoisy_[static_cast<size_t>(t * E + e)] += static_cast<T>(c * static_cast<double>(p[e]) * (static_cast<double>(routed[static_cast<size_t>(e)]) / (N * K) - fp));
    }
  }
  // noisy = logits + eps * softplus(noise_logits)
#pragma omp parallel for schedule(static)
  for (long i = 0; i < static_cast<long>(N) * E; ++i) {
    drouter_[static_cast<size_t>(i)] += dnoisy_[static_cast<size_t>(i)];
    if (a.noisy_forward) dnoise_[static_cast<size_t>(i)] += dnoisy_[static_cast<size_t>(i)] * a.noise_eps[static_cast<size_t>(i)] * sigmoid(a.noise_logits[static_cast<size_t>(i)]);
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
  linear_backward(dln2, true, gw.router, classic ? gw.router_bias : nullptr, drouter_.data(), a.ln2.data(), lw.router, N, d, E);
  if (cfg_.router_noise) {
    if (a.noisy_forward) {
      linear_backward(dln2, true, gw.noise_w, gw.noise_b, dnoise_.data(), a.ln2.data(), lw.noise_w, N, d, E);
    } else {
      std::fill(gw.noise_w, gw.noise_w + static_cast<long>(E) * d, T(0));
      std::fill(gw.noise_b, gw.noise_b + E, T(0));
    }
  }
}

template struct Weights<float>;
template struct Weights<double>;
template <class T>
const T* Model<T>::moe_input(int l) const {
  return acts_[static_cast<size_t>(l)].ln2.data();
}

template <class T>
int Model<T>::first_choice(int l, int n) const {
  return acts_[static_cast<size_t>(l)].order[static_cast<size_t>(n) * static_cast<size_t>(cfg_.model.n_experts)];
}

template class Model<float>;
template class Model<double>;

}  // namespace moe::train
