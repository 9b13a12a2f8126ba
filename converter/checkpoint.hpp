// A checkpoint directory as moe_convert reads it. Two layouts:
//   hf-mixtral: config.json (model_type "mixtral") + Hugging Face Mixtral tensor names,
//               in model.safetensors or shards named by model.safetensors.index.json
//   makemoe:    config.json (model_type "makemoe") + makeMoE's state_dict names +
//               tokenizer.json {"type": "char", "chars": "..."}
// moe_train writes one of these two; there is no third.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "converter/safetensors.hpp"
#include "moe/config.hpp"
#include "moe/model_file.hpp"
#include "moe/model_layout.hpp"

namespace moe::convert {

// The checkpoint tensor names that hold one tensor of the .moe layout, in row order
// (makeMoE keeps one q/k/v matrix per head; they are concatenated). `format` is
// "hf-mixtral" or "makemoe"; `tied` maps Mixtral's lm_head to the embedding table.
// moe_convert reads by these names and moe_train writes by them.
std::vector<std::string> checkpoint_tensor_names(const std::string& format, const ModelConfig& config, const TensorSpec& spec,
                                                 bool tied = false);

struct Checkpoint {
  std::filesystem::path dir;
  std::string format;  // "hf-mixtral" | "makemoe"
  ModelConfig config;
  float rope_theta = 0.f;
  float norm_eps = 1e-5f;
  AttentionScaleRule attention_scale = AttentionScaleRule::inv_sqrt_head_dim;
  int32_t bos_token_id = -1;
  int32_t eos_token_id = -1;
  double capacity_factor = 0.;     // makeMoE expert capacity; 0: none
  std::vector<uint32_t> chars;     // char tokenizer; empty: token-id model
  std::vector<std::string> notes;  // things the user should know (defaults taken, tensors ignored)
  std::unique_ptr<TensorStore> store;

  bool tied_embeddings = false;  // Mixtral without lm_head.weight

  std::vector<std::string> source_names(const TensorSpec& spec) const {
    return checkpoint_tensor_names(format, config, spec, tied_embeddings);
  }
  // That tensor as f32 [rows, cols]; throws naming the tensor when it is missing, has
  // another shape, an unsupported dtype, or a NaN/Inf.
  std::vector<float> load(const TensorSpec& spec) const;
  // Checkpoint tensors no spec uses (training-only ones such as makeMoE's noise_linear).
  std::vector<std::string> unused_tensors() const;
};

// Reads config.json (and tokenizer.json) and indexes the tensors. `max_context`
// overrides the checkpoint's context length when > 0 (Mixtral's 32k would make a large
// KV cache; a model cannot be given more context than it was built for).
// `capacity_factor` >= 0 overrides the checkpoint's expert capacity (0: none).
Checkpoint open_checkpoint(const std::filesystem::path& dir, int max_context = 0, double capacity_factor = -1.);

}  // namespace moe::convert
