// The one table from tensor role to weight slot. A model's weights sit in slots named
// after their roles (model_layout.hpp): global ones, one set per layer, one per expert.
// The engine fills them with views into the .moe file (Matrix, Vector) and the trainer
// with pointers into its parameter buffer (T*); both bind through with_weight_slot, so
// a role added to the layout is bound in one place.
#pragma once

#include "moe/model_layout.hpp"

namespace moe {

template <class Mat, class Vec>
struct ExpertSlots {
  Mat w1{}, w2{}, w3{};  // llama: w1 gate, w3 up, w2 down; classic: w1 up, w2 down
  Vec b1{}, b2{};        // classic only
};

template <class Mat, class Vec>
struct LayerSlots {
  Vec attn_norm{}, attn_norm_bias{};
  Mat wq{}, wk{}, wv{}, wo{};
  Vec wq_bias{}, wk_bias{}, wv_bias{};
  Vec q_norm{}, k_norm{};
  Vec wo_bias{};
  Vec ffn_norm{}, ffn_norm_bias{};
  Mat router{};
  Vec router_bias{};
  ExpertSlots<Mat, Vec> dense{};   // a dense MLP layer's w1 gate, w2 down, w3 up
  ExpertSlots<Mat, Vec> shared{};  // the shared expert, likewise
  Mat shared_gate{};
};

template <class Mat, class Vec>
struct GlobalSlots {
  Mat token_embedding{}, position_embedding{};
  Vec final_norm{}, final_norm_bias{};
  Mat lm_head{};
  Vec lm_head_bias{};
};

// Calls f(slot) with the slot of w that a tensor of `spec` fills. `Weights` derives
// from GlobalSlots and has `layers[l]` (deriving from LayerSlots) with `experts[e]`
// (ExpertSlots); arrays and vectors both do.
template <class Weights, class F>
constexpr void with_weight_slot(Weights& w, const TensorSpec& s, F&& f) {
  if (s.layer < 0) {
    switch (s.role) {
      case TensorRole::token_embedding: return f(w.token_embedding);
      case TensorRole::position_embedding: return f(w.position_embedding);
      case TensorRole::final_norm: return f(w.final_norm);
      case TensorRole::final_norm_bias: return f(w.final_norm_bias);
      case TensorRole::lm_head: return f(w.lm_head);
      case TensorRole::lm_head_bias: return f(w.lm_head_bias);
      default: return;
    }
  }
  auto& lw = w.layers[s.layer];
  if (s.expert >= 0) {
    auto& ew = lw.experts[s.expert];
    switch (s.role) {
      case TensorRole::expert_w1: return f(ew.w1);
      case TensorRole::expert_b1: return f(ew.b1);
      case TensorRole::expert_w2: return f(ew.w2);
      case TensorRole::expert_b2: return f(ew.b2);
      case TensorRole::expert_w3: return f(ew.w3);
      default: return;
    }
  }
  switch (s.role) {
    case TensorRole::attn_norm: return f(lw.attn_norm);
    case TensorRole::attn_norm_bias: return f(lw.attn_norm_bias);
    case TensorRole::wq: return f(lw.wq);
    case TensorRole::wk: return f(lw.wk);
    case TensorRole::wv: return f(lw.wv);
    case TensorRole::wo: return f(lw.wo);
    case TensorRole::wo_bias: return f(lw.wo_bias);
    case TensorRole::ffn_norm: return f(lw.ffn_norm);
    case TensorRole::ffn_norm_bias: return f(lw.ffn_norm_bias);
    case TensorRole::router: return f(lw.router);
    case TensorRole::router_bias: return f(lw.router_bias);
    case TensorRole::wq_bias: return f(lw.wq_bias);
    case TensorRole::wk_bias: return f(lw.wk_bias);
    case TensorRole::wv_bias: return f(lw.wv_bias);
    case TensorRole::q_norm: return f(lw.q_norm);
    case TensorRole::k_norm: return f(lw.k_norm);
    case TensorRole::dense_w1: return f(lw.dense.w1);
    case TensorRole::dense_w2: return f(lw.dense.w2);
    case TensorRole::dense_w3: return f(lw.dense.w3);
    case TensorRole::shared_w1: return f(lw.shared.w1);
    case TensorRole::shared_w2: return f(lw.shared.w2);
    case TensorRole::shared_w3: return f(lw.shared.w3);
    case TensorRole::shared_gate: return f(lw.shared_gate);
    default: return;
  }
}

}  // namespace moe
