// The trainable model: parameters and their gradients each in one contiguous buffer
// (llm.c style), activations kept for the backward pass, and forward/backward for both
// families. Runtime-sized (training runs on a host), templated on the scalar type so
// gradient checks can run in double precision.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/model_layout.hpp"
#include "moe/weight_slots.hpp"
#include "trainer/train_config.hpp"

namespace moe::train {

// One tensor of the flat parameter buffer.
struct ParamInfo {
  TensorSpec spec;     // role, layer, expert and shape (the .moe layout's spec)
  bool noise = false;  // the router's noise Linear (noisy gating): training only
  long offset = 0;
  long size = 0;
  std::string name() const;  // "wq of layer 3", "router noise weight of layer 0", ...
};

// The parameter layout of a config: every tensor of the .moe layout, plus the noise
// Linear of each layer when noisy gating is on. Matrices other than embeddings come
// first, so "decayed" parameters are one prefix of the buffer (see decayed_prefix).
std::vector<ParamInfo> parameter_table(const TrainConfig& c);
long parameter_count(const std::vector<ParamInfo>& table);
// Elements [0, n) get weight decay: all of them (makeMoE: AdamW's default) or only the
// non-embedding matrices.
long decayed_prefix(const std::vector<ParamInfo>& table, bool decay_everything);

template <class T>
using ExpertWeights = ExpertSlots<T*, T*>;
template <class T>
struct LayerWeights : LayerSlots<T*, T*> {
  T *noise_w = nullptr, *noise_b = nullptr;  // the router's noise Linear (noisy gating): training only
  std::vector<ExpertWeights<T>> experts;
};
// Named pointers into a flat buffer laid out by parameter_table (used for the
// parameters and, with the same layout, for their gradients).
template <class T>
struct Weights : GlobalSlots<T*, T*> {
  std::vector<LayerWeights<T>> layers;
  void bind(T* base, const std::vector<ParamInfo>& table, const ModelConfig& c);
};

// What one forward pass measured, for logs and tests.
struct ForwardStats {
  double ce = 0;   // mean cross-entropy
  double aux = 0;  // load-balancing loss, summed over layers (coefficient included)
  double z = 0;    // router z-loss, summed over layers (coefficient included)
  double total() const { return ce + aux + z; }
  std::vector<std::vector<long>> routed;  // [layer][expert] token-expert pairs the router chose
  std::vector<std::vector<long>> kept;    // [layer][expert] of those, within capacity
};

template <class T>
class Model {
 public:
  // Buffers for batches of up to max_batch sequences of up to config.model.max_context tokens.
  Model(const TrainConfig& config, int max_batch);
  ~Model();  // defined where LayerActs is complete
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const TrainConfig& config() const { return cfg_; }
  const std::vector<ParamInfo>& table() const { return table_; }
  long num_params() const { return static_cast<long>(params.size()); }

  // makeMoE's initialisation for the classic family (Kaiming-normal Linear weights,
  // PyTorch's uniform Linear biases, N(0,1) embeddings); Mixtral's for llama (N(0, 0.02)).
  void init_params(uint64_t seed);

  // inputs/targets: [B, T] token ids. `training` turns on dropout and router noise;
  // `step` selects their random draws. Returns the loss (cross-entropy + router
  // losses); targets may be null (logits only, returns 0).
  double forward(const int32_t* inputs, const int32_t* targets, int B, int T_len, bool training, uint64_t step);
  // Gradients of the last forward's loss, written into `grads`.
  void backward();

  const T* logits() const { return logits_.data(); }  // [B*T, vocab] of the last forward
  const ForwardStats& stats() const { return stats_; }
  // The residual stream entering layer l (l = n_layers: after the last layer) for the
  // last forward: [B*T, d_model] rows. moe_merge builds routers from it.
  const T* residual(int l) const { return resid_.data() + static_cast<long>(l) * max_tokens_ * cfg_.model.d_model; }
  // Layer l's router input (the normalised residual after attention, [B*T, d_model]) and
  // token n's first-choice expert there, for the last forward.
  const T* moe_input(int l) const;
  int first_choice(int l, int n) const;

  // Gradient checks hold the router's choices fixed: after one forward records them,
  // later forwards reuse the recorded expert order of every token.
  void set_replay_routing(bool on) { replay_routing_ = on; }

  std::vector<T> params;  // one buffer, laid out by table()
  std::vector<T> grads;   // same layout

 private:
  struct LayerActs;
  void moe_forward(int l, int N, bool training, uint64_t step);
  void moe_backward(int l, int N, T* dln2);

  TrainConfig cfg_;
  std::vector<ParamInfo> table_;
  Weights<T> w_, g_;
  int max_tokens_;
  int B_ = 0, T_ = 0;
  bool training_ = false;
  bool replay_routing_ = false;
  const int32_t* inputs_ = nullptr;
  const int32_t* targets_ = nullptr;
  ForwardStats stats_;

  std::vector<LayerActs> acts_;
  std::vector<T> resid_;  // [L+1][N, d]: the residual stream entering each layer (and the output)
  std::vector<T> lnf_, lnf_mean_, lnf_rstd_, logits_, probs_;
  std::vector<double> token_losses_;
  // backward scratch
  std::vector<T> dres_, dln_, dqkv_, datt_, dproj_, dlogits_;
  std::vector<T> d_slot_d_, d_slot_f_, d_slot_f2_, d_slot_in_;
  std::vector<T> dgate_, dnoisy_, drouter_, dnoise_;
};

}  // namespace moe::train
