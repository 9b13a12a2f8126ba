// Which tensors a model of a given config has, their shapes, their quantization class
// and their order in the .moe file. Declared once: moe_convert writes tensors in this
// order, the loader checks them against it, and the engine binds them by it.
#pragma once

#include "moe/config.hpp"

namespace moe {

// Values match moe.fb.TensorRole (static_asserted in model_file.hpp).
enum class TensorRole : uint16_t {
  token_embedding = 0,
  position_embedding = 1,
  attn_norm = 2,
  attn_norm_bias = 3,
  wq = 4,
  wk = 5,
  wv = 6,
  wo = 7,
  wo_bias = 8,
  ffn_norm = 9,
  ffn_norm_bias = 10,
  router = 11,
  router_bias = 12,
  expert_w1 = 13,
  expert_b1 = 14,
  expert_w2 = 15,
  expert_b2 = 16,
  expert_w3 = 17,
  final_norm = 18,
  final_norm_bias = 19,
  lm_head = 20,
  lm_head_bias = 21,
  q_norm = 22,
  k_norm = 23,
  wq_bias = 24,
  wk_bias = 25,
  wv_bias = 26,
  dense_w1 = 27,
  dense_w2 = 28,
  dense_w3 = 29,
  shared_w1 = 30,
  shared_w2 = 31,
  shared_w3 = 32,
  shared_gate = 33,
};
inline constexpr int kTensorRoleCount = 34;

constexpr const char* role_name(TensorRole r) {
  constexpr const char* names[kTensorRoleCount] = {"token_embedding",
                                                   "position_embedding",
                                                   "attn_norm",
                                                   "attn_norm_bias",
                                                   "wq",
                                                   "wk",
                                                   "wv",
                                                   "wo",
                                                   "wo_bias",
                                                   "ffn_norm",
                                                   "ffn_norm_bias",
                                                   "router",
                                                   "router_bias",
                                                   "expert_w1",
                                                   "expert_b1",
                                                   "expert_w2",
                                                   "expert_b2",
                                                   "expert_w3",
                                                   "final_norm",
                                                   "final_norm_bias",
                                                   "lm_head",
                                                   "lm_head_bias",
                                                   "q_norm",
                                                   "k_norm",
                                                   "wq_bias",
                                                   "wk_bias",
                                                   "wv_bias",
                                                   "dense_w1",
                                                   "dense_w2",
                                                   "dense_w3",
                                                   "shared_w1",
                                                   "shared_w2",
                                                   "shared_w3",
                                                   "shared_gate"};
  const int i = static_cast<int>(r);
  return i >= 0 && i < kTensorRoleCount ? names[i] : "unknown";
}

// Quantization classes: what moe_convert's recipe chooses a dtype for.
enum class TensorClass : uint8_t {
  embedding,  // token and position tables, lm_head: f32 | f16 | i8
  attention,  // q, k, v, o projections: f32 | f16 | i8
  expert,     // expert FFN matrices, the bulk of the bytes (and the shared expert's and
              // dense layers' FFN matrices, the same kind of weight): f32 | f16 | i8
  f32_only,   // norms, biases, router, shared-expert gate: always f32 (small, and routing is sensitive)
};
inline constexpr int kTensorClassCount = 4;

constexpr const char* class_name(TensorClass c) {
  return c == TensorClass::embedding   ? "embeddings"
         : c == TensorClass::attention ? "attention"
         : c == TensorClass::expert    ? "experts"
                                       : "norms+biases+router";
}

struct TensorSpec {
  TensorRole role{};
  int layer = -1;   // -1: global
  int expert = -1;  // -1: not an expert weight
  int rows = 0;
  int cols = 0;  // 0: a vector of `rows` elements
  TensorClass klass = TensorClass::f32_only;

  constexpr bool is_matrix() const { return cols > 0; }
  constexpr long elements() const { return static_cast<long>(rows) * (cols > 0 ? cols : 1); }
};

// Calls f(spec) for every tensor of the model, in file order.
template <class F>
constexpr void for_each_tensor_spec(const ModelConfig& c, F&& f) {
  const bool classic = c.has_biases();
  const int d = c.d_model;
  auto vec = [&](TensorRole r, int n, int layer = -1, int expert = -1) {
    f(TensorSpec{r, layer, expert, n, 0, TensorClass::f32_only});
  };
  auto mat = [&](TensorRole r, int rows, int cols, TensorClass k, int layer = -1, int expert = -1) {
    f(TensorSpec{r, layer, expert, rows, cols, k});
  };
  mat(TensorRole::token_embedding, c.vocab_size, d, TensorClass::embedding);
  if (c.has_position_table()) mat(TensorRole::position_embedding, c.max_context, d, TensorClass::embedding);
  for (int l = 0; l < c.n_layers; ++l) {
    vec(TensorRole::attn_norm, d, l);
    if (classic) vec(TensorRole::attn_norm_bias, d, l);
    mat(TensorRole::wq, c.q_dim(), d, TensorClass::attention, l);
    if (c.qkv_bias) vec(TensorRole::wq_bias, c.q_dim(), l);
    mat(TensorRole::wk, c.kv_dim(), d, TensorClass::attention, l);
    if (c.qkv_bias) vec(TensorRole::wk_bias, c.kv_dim(), l);
    mat(TensorRole::wv, c.kv_dim(), d, TensorClass::attention, l);
    if (c.qkv_bias) vec(TensorRole::wv_bias, c.kv_dim(), l);
    if (c.qk_norm != QkNorm::none) {
      const bool per_head = c.qk_norm == QkNorm::per_head;
      vec(TensorRole::q_norm, per_head ? c.head_dim : c.q_dim(), l);
      vec(TensorRole::k_norm, per_head ? c.head_dim : c.kv_dim(), l);
    }
    mat(TensorRole::wo, d, c.q_dim(), TensorClass::attention, l);
    if (classic) vec(TensorRole::wo_bias, d, l);
    vec(TensorRole::ffn_norm, d, l);
    if (classic) vec(TensorRole::ffn_norm_bias, d, l);
    if (c.is_dense_layer(l)) {
      mat(TensorRole::dense_w1, c.dense_hidden, d, TensorClass::expert, l);
      mat(TensorRole::dense_w2, d, c.dense_hidden, TensorClass::expert, l);
      mat(TensorRole::dense_w3, c.dense_hidden, d, TensorClass::expert, l);
      continue;
    }
    mat(TensorRole::router, c.n_experts, d, TensorClass::f32_only, l);
    if (classic) vec(TensorRole::router_bias, c.n_experts, l);
    for (int e = 0; e < c.n_experts; ++e) {
      mat(TensorRole::expert_w1, c.expert_hidden, d, TensorClass::expert, l, e);
      if (classic) vec(TensorRole::expert_b1, c.expert_hidden, l, e);
      mat(TensorRole::expert_w2, d, c.expert_hidden, TensorClass::expert, l, e);
      if (classic) vec(TensorRole::expert_b2, d, l, e);
      if (c.gated_experts()) mat(TensorRole::expert_w3, c.expert_hidden, d, TensorClass::expert, l, e);
    }
    if (c.has_shared_expert()) {
      mat(TensorRole::shared_w1, c.shared_expert_hidden, d, TensorClass::expert, l);
      mat(TensorRole::shared_w2, d, c.shared_expert_hidden, TensorClass::expert, l);
      mat(TensorRole::shared_w3, c.shared_expert_hidden, d, TensorClass::expert, l);
      mat(TensorRole::shared_gate, 1, d, TensorClass::f32_only, l);
    }
  }
  vec(TensorRole::final_norm, d);
  if (classic) vec(TensorRole::final_norm_bias, d);
  mat(TensorRole::lm_head, c.vocab_size, d, TensorClass::embedding);
  if (classic) vec(TensorRole::lm_head_bias, c.vocab_size);
}

constexpr int tensor_count(const ModelConfig& c) {
  int n = 0;
  for_each_tensor_spec(c, [&](const TensorSpec&) { ++n; });
  return n;
}

// "wq of layer 3", "expert_w2 of layer 0, expert 5", "lm_head": for messages.
inline int describe_tensor(TensorRole role, int layer, int expert, char* buf, size_t n) {
  if (layer >= 0 && expert >= 0) return format(buf, n, "%s of layer %d, expert %d", role_name(role), layer, expert);
  if (layer >= 0) return format(buf, n, "%s of layer %d", role_name(role), layer);
  return format(buf, n, "%s", role_name(role));
}

// Parameters a token touches: attention, router and k of the n experts per layer,
// plus the output head (an embedding row lookup is not a matrix-vector product).
constexpr long active_params_per_token(const ModelConfig& c) {
  long n = 0;
  for_each_tensor_spec(c, [&](const TensorSpec& s) {
    if (s.role == TensorRole::token_embedding || s.role == TensorRole::position_embedding) return;
    if (s.expert >= 0) {
      if (s.expert < c.top_k) n += s.elements();  // k experts' worth
      return;
    }
    n += s.elements();
  });
  return n;
}

constexpr long total_params(const ModelConfig& c) {
  long n = 0;
  for_each_tensor_spec(c, [&](const TensorSpec& s) { n += s.elements(); });
  return n;
}

}  // namespace moe
