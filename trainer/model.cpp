#include "trainer/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <numeric>
#include <stdexcept>

#include "trainer/model_acts.hpp"
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
  return p.spec.is_matrix() && p.spec.role != TensorRole::token_embedding &&
         p.spec.role != TensorRole::position_embedding;
}
}  // namespace

std::vector<ParamInfo> parameter_table(const TrainConfig& c) {
  std::vector<ParamInfo> all;
  for_each_tensor_spec(c.model, [&](const TensorSpec& s) { all.push_back(ParamInfo{s, false, 0, 0}); });
  if (c.router_noise) {
    for (int l = 0; l < c.model.n_layers; ++l) {
      all.push_back(
          ParamInfo{TensorSpec{TensorRole::router, l, -1, c.model.n_experts, c.model.d_model, TensorClass::f32_only},
                    true, 0, 0});
      all.push_back(ParamInfo{TensorSpec{TensorRole::router_bias, l, -1, c.model.n_experts, 0, TensorClass::f32_only},
                              true, 0, 0});
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
    if (lw.wk != lw.wq + static_cast<long>(m.q_dim()) * m.d_model ||
        lw.wv != lw.wk + static_cast<long>(m.kv_dim()) * m.d_model)
      throw std::logic_error("parameter layout: wq, wk, wv must be adjacent");

  max_tokens_ = max_batch * m.max_context;
  const size_t N = static_cast<size_t>(max_tokens_), d = static_cast<size_t>(m.d_model),
               E = static_cast<size_t>(m.n_experts);
  const size_t K = static_cast<size_t>(m.top_k), F = static_cast<size_t>(m.expert_hidden), S = N * K;
  const size_t QD = static_cast<size_t>(m.q_dim()), KVD = static_cast<size_t>(m.kv_dim());
  const size_t att = static_cast<size_t>(max_batch) * static_cast<size_t>(m.n_heads) *
                     static_cast<size_t>(m.max_context) * static_cast<size_t>(m.max_context);
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
    const bool norm =
        !info.noise && (r == TensorRole::attn_norm || r == TensorRole::ffn_norm || r == TensorRole::final_norm);
    const bool norm_bias =
        r == TensorRole::attn_norm_bias || r == TensorRole::ffn_norm_bias || r == TensorRole::final_norm_bias;
    const bool embedding = r == TensorRole::token_embedding || r == TensorRole::position_embedding;
    for (long i = 0; i < info.size; ++i) {
      double v;
      if (norm) v = 1.0;
      else if (norm_bias) v = 0.0;
      else if (!classic) v = info.spec.is_matrix() ? 0.02 * rng.normal(static_cast<uint64_t>(i)) : 0.0;  // Mixtral
      else if (embedding) v = rng.normal(static_cast<uint64_t>(i));                                      // nn.Embedding
      else if (info.spec.is_matrix())
        v = std::sqrt(2.0 / info.spec.cols) * rng.normal(static_cast<uint64_t>(i));  // kaiming_normal_
      else {
        // nn.Linear's bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = its weight's columns.
        const int fan_in = r == TensorRole::expert_b2 ? m.expert_hidden
                           : r == TensorRole::wo_bias ? m.q_dim()
                                                      : m.d_model;
        v = (2 * rng.uniform(static_cast<uint64_t>(i)) - 1) / std::sqrt(static_cast<double>(fan_in));
      }
      dst[i] = static_cast<T>(v);
    }
  }
}

// ---- forward ------------------------------------------------------------------------------

template <class T>
double Model<T>::forward(const int32_t* inputs, const int32_t* targets, int B, int T_len, bool training,
                         uint64_t step) {
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
  const AttentionShape shape{
      B, T_len, m.n_heads, m.n_kv_heads, m.head_dim, qkv_dim, qkv_dim, m.q_dim(), attention_factor(m, cfg_.constants)};
  const long att_size = static_cast<long>(B) * m.n_heads * T_len * T_len;
  for (int l = 0; l < L; ++l) {
    LayerActs& a = acts_[static_cast<size_t>(l)];
    const LayerWeights<T>& lw = w_.layers[static_cast<size_t>(l)];
    const T* x = resid_.data() + static_cast<long>(l) * max_tokens_ * d;
    T* x_next = resid_.data() + static_cast<long>(l + 1) * max_tokens_ * d;
    // attention sub-block: x_mid = x + dropout(Wo attention(norm(x)))
    if (classic)
      layernorm_forward(a.ln1.data(), a.ln1_mean.data(), a.ln1_rstd.data(), x, lw.attn_norm, lw.attn_norm_bias, N, d,
                        T(cfg_.constants.norm_eps));
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
    attention_forward(a.atty.data(), a.att.data(), drop ? a.att_mask.data() : static_cast<const T*>(nullptr), q, k, v,
                      shape);
    linear_forward(a.proj.data(), a.atty.data(), lw.wo, classic ? static_cast<const T*>(lw.wo_bias) : nullptr, N,
                   m.q_dim(), d);
    if (drop)
      dropout_mask(a.proj_mask.data(), static_cast<long>(N) * d, cfg_.dropout,
                   CounterRng(cfg_.seed, Stream::dropout, site + 1));
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(N) * d; ++i)
      a.xmid[static_cast<size_t>(i)] =
          x[i] + (drop ? a.proj[static_cast<size_t>(i)] * a.proj_mask[static_cast<size_t>(i)]
                       : a.proj[static_cast<size_t>(i)]);
    // MoE sub-block: x_next = x_mid + moe(norm(x_mid))
    if (classic)
      layernorm_forward(a.ln2.data(), a.ln2_mean.data(), a.ln2_rstd.data(), a.xmid.data(), lw.ffn_norm,
                        lw.ffn_norm_bias, N, d, T(cfg_.constants.norm_eps));
    else rmsnorm_forward(a.ln2.data(), a.ln2_rstd.data(), a.xmid.data(), lw.ffn_norm, N, d, T(cfg_.constants.norm_eps));
    moe_forward(l, N, training, step);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(N) * d; ++i)
      x_next[i] = a.xmid[static_cast<size_t>(i)] + a.moe_out[static_cast<size_t>(i)];
  }

  const T* xL = resid_.data() + static_cast<long>(L) * max_tokens_ * d;
  if (classic)
    layernorm_forward(lnf_.data(), lnf_mean_.data(), lnf_rstd_.data(), xL, w_.final_norm, w_.final_norm_bias, N, d,
                      T(cfg_.constants.norm_eps));
  else rmsnorm_forward(lnf_.data(), lnf_rstd_.data(), xL, w_.final_norm, N, d, T(cfg_.constants.norm_eps));
  linear_forward(logits_.data(), lnf_.data(), w_.lm_head, classic ? static_cast<const T*>(w_.lm_head_bias) : nullptr, N,
                 d, V);
  stats_.ce = targets ? crossentropy_forward(probs_.data(), token_losses_.data(), logits_.data(), targets, N, V) : 0.0;
  return targets ? stats_.total() : 0.0;
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
  linear_backward(dln_.data(), false, g_.lm_head, classic ? g_.lm_head_bias : nullptr, dlogits_.data(), lnf_.data(),
                  w_.lm_head, N, d, V);
  std::fill(dres_.begin(), dres_.begin() + static_cast<long>(N) * d, T(0));
  const T* xL = resid_.data() + static_cast<long>(L) * max_tokens_ * d;
  if (classic)
    layernorm_backward(dres_.data(), g_.final_norm, g_.final_norm_bias, dln_.data(), xL, w_.final_norm,
                       lnf_mean_.data(), lnf_rstd_.data(), N, d);
  else rmsnorm_backward(dres_.data(), g_.final_norm, dln_.data(), xL, w_.final_norm, lnf_rstd_.data(), N, d);

  const int qkv_dim = m.q_dim() + 2 * m.kv_dim();
  const AttentionShape shape{
      B_, T_len, m.n_heads, m.n_kv_heads, m.head_dim, qkv_dim, qkv_dim, m.q_dim(), attention_factor(m, cfg_.constants)};
  for (int l = L - 1; l >= 0; --l) {
    LayerActs& a = acts_[static_cast<size_t>(l)];
    const LayerWeights<T>& lw = w_.layers[static_cast<size_t>(l)];
    LayerWeights<T>& gw = g_.layers[static_cast<size_t>(l)];
    const T* x = resid_.data() + static_cast<long>(l) * max_tokens_ * d;
    // x_next = x_mid + moe(norm2(x_mid)): dres is d x_next
    moe_backward(l, N, dln_.data());
    if (classic)
      layernorm_backward(dres_.data(), gw.ffn_norm, gw.ffn_norm_bias, dln_.data(), a.xmid.data(), lw.ffn_norm,
                         a.ln2_mean.data(), a.ln2_rstd.data(), N, d);
    else rmsnorm_backward(dres_.data(), gw.ffn_norm, dln_.data(), a.xmid.data(), lw.ffn_norm, a.ln2_rstd.data(), N, d);
      // dres is now d x_mid; x_mid = x + dropout(Wo attention(norm1(x)))
#pragma omp parallel for schedule(static)
    for (long i = 0; i < static_cast<long>(N) * d; ++i)
      dproj_[static_cast<size_t>(i)] =
          drop ? dres_[static_cast<size_t>(i)] * a.proj_mask[static_cast<size_t>(i)] : dres_[static_cast<size_t>(i)];
    linear_backward(datt_.data(), false, gw.wo, classic ? gw.wo_bias : nullptr, dproj_.data(), a.atty.data(), lw.wo, N,
                    m.q_dim(), d);
    const T* q = a.qkv.data();
    T* dq = dqkv_.data();
    attention_backward(dq, dq + m.q_dim(), dq + m.q_dim() + m.kv_dim(), datt_.data(), a.att.data(),
                       drop ? a.att_mask.data() : static_cast<const T*>(nullptr), q, q + m.q_dim(),
                       q + m.q_dim() + m.kv_dim(), shape);
    if (!classic) {
      rope_backward(dq, N, T_len, m.n_heads, m.head_dim, qkv_dim, cfg_.constants.rope_theta);
      rope_backward(dq + m.q_dim(), N, T_len, m.n_kv_heads, m.head_dim, qkv_dim, cfg_.constants.rope_theta);
    }
    // One product for wq|wk|wv (adjacent in both buffers).
    linear_backward(dln_.data(), false, gw.wq, static_cast<T*>(nullptr), dq, a.ln1.data(), lw.wq, N, d, qkv_dim);
    if (classic)
      layernorm_backward(dres_.data(), gw.attn_norm, gw.attn_norm_bias, dln_.data(), x, lw.attn_norm, a.ln1_mean.data(),
                         a.ln1_rstd.data(), N, d);
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
        for (int i = 0; i < d; ++i)
          g_.position_embedding[static_cast<long>(t) * d + i] += dres_[static_cast<size_t>((b * T_len + t) * d + i)];
  }
}

// dres = d moe_out; writes dln2 = d ln2 (through the experts and the router).
template struct Weights<float>;
template struct Weights<double>;
template class Model<float>;
template class Model<double>;

}  // namespace moe::train
