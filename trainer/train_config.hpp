// Everything that defines a training run: the model (the engine's ModelConfig: one
// declaration of a model's shape for the whole project), the MoE recipe, the optimizer
// and the bookkeeping. Presets fill it; flags override; it is saved with every
// checkpoint so a resumed run is the same run.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "moe/config.hpp"

namespace moe::train {

enum class AuxLoss : uint8_t {
  none,
  switch_transformer,  // Fedus et al.: coef * E * sum_i f_i * P_i
  cv_squared,          // Shazeer et al.: coef * (CV(importance)^2 + CV(load)^2)
};
enum class Schedule : uint8_t { constant, cosine };

struct TrainConfig {
  ModelConfig model{};         // vocab_size comes from the corpus; max_context is the block size
  ModelConstants constants{};  // capacity_factor is the recipe's (makeMoE: 1.0; 0: no limit)
  // ---- the MoE recipe
  bool router_noise = true;  // noisy top-k gating (training only)
  float dropout = 0.1f;
  AuxLoss aux_loss = AuxLoss::none;
  float aux_coef = 0.01f;
  float z_loss_coef = 0.f;  // router z-loss (ST-MoE); 0: off
  // ---- optimisation (AdamW, PyTorch semantics)
  int batch = 16;
  int steps = 5000;
  float lr = 1e-3f;
  float min_lr = 1e-4f;  // cosine schedule floor
  int warmup = 0;
  Schedule schedule = Schedule::constant;
  float weight_decay = 0.01f;
  bool decay_everything = true;  // makeMoE: AdamW's default decay on every parameter
  float beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;
  float grad_clip = 0.f;  // global-norm clipping; 0: off
  uint64_t seed = 1337;
  // ---- bookkeeping
  int eval_interval = 100;
  int eval_batches = 50;
  int checkpoint_interval = 500;
  int log_interval = 10;

  // Why this config cannot train, or "" when it can.
  std::string problem() const;
  nlohmann::json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j);  // throws InputError on malformed input
};

// Presets:
//   makemoe  the makeMoE Shakespeare recipe: classic family, d 128, 8 heads, 8 layers,
//            8 experts, top-2, block 32, batch 16, dropout 0.1, noisy gating,
//            capacity 1.0, AdamW lr 1e-3, 5000 steps
//   quick    the same model for 1500 steps (a few minutes: README's main job)
//   tiny     d 32, 2 layers, 4 experts: seconds (tests, CI)
//   switch   top-1 with the Switch load-balancing loss, capacity 1.25, no noise
//   gshard   top-2 with the Switch-style balancing loss, capacity 2.0
//   dense    soft gating over all experts (k = E), no capacity, no noise
//   mixtral  the llama family (RMSNorm, RoPE, GQA 8/4, SwiGLU experts), same scale as makemoe
TrainConfig preset(const std::string& name);  // throws InputError for an unknown name
const char* preset_names();                   // "makemoe, quick, tiny, ..."

}  // namespace moe::train
