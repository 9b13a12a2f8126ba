// The activations Model<T> keeps per layer for the backward pass: shared by the model's
// forward/backward (model.cpp) and its MoE layer (moe_layer.cpp). Private to the trainer.
#pragma once

#include <vector>

#include "trainer/model.hpp"

namespace moe::train {

template <class T>
struct Model<T>::LayerActs {
  std::vector<T> ln1, ln1_mean, ln1_rstd, qkv /* [N, q|k|v] */, att, att_mask, atty, proj, proj_mask, xmid;
  std::vector<T> ln2, ln2_mean, ln2_rstd;
  // router: [N, E] unless noted
  std::vector<T> logits, noise_logits, noise_eps, noisy, probs, lse /* [N] */;
  std::vector<int> order;          // [N, E] experts by noisy logit, best first
  std::vector<T> gates;            // [N, k] softmax over the k chosen noisy logits
  std::vector<int> slot;           // [N, k] expert slot of each choice, -1 if over capacity
  std::vector<int> expert_offset;  // [E + 1] first slot of each expert
  std::vector<int> slot_token;     // [S] token of each slot
  // experts, one row per slot: [S, d] or [S, F]
  std::vector<T> xin, h1, h3, z, y, y_mask, yd;
  std::vector<T> moe_out;  // [N, d]
  bool noisy_forward = false;
};

}  // namespace moe::train
