// The checkpoint layouts moe_convert reads and moe_train, moe_merge and
// moe_random_checkpoint write, each described once: its config.json keys, the
// constants it implies when a key is absent, and its tensor names. The reader
// (checkpoint.cpp) and the writer (checkpoint_writer.cpp) both work from these
// descriptions and include neither each other nor anything but this.
//   hf-mixtral: config.json (model_type "mixtral") + Hugging Face Mixtral tensor names,
//               in model.safetensors or shards named by model.safetensors.index.json
//   makemoe:    config.json (model_type "makemoe") + makeMoE's state_dict names +
//               tokenizer.json {"type": "char", "chars": "..."}
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/config.hpp"
#include "moe/model_layout.hpp"

namespace moe::converter {

struct CheckpointLayout {
  const char* name;        // "hf-mixtral" | "makemoe": messages and the .moe provenance
  const char* model_type;  // config.json's "model_type"
  Family family;
  // config.json key of each ModelConfig field; nullptr where the layout derives it
  // (makeMoE: n_kv_heads = n_heads, head_dim = d_model / n_heads).
  const char* d_model;
  const char* n_layers;
  const char* n_heads;
  const char* n_kv_heads;
  const char* head_dim;
  const char* n_experts;
  const char* top_k;
  const char* expert_hidden;
  const char* vocab_size;
  const char* max_context;
  // Keys of the constants; nullptr where the layout has none (the value is fixed).
  const char* norm_eps;
  const char* rope_theta;
  const char* attention_scale;
  const char* capacity_factor;
  // The constants a checkpoint of this layout has when config.json omits their keys
  // (the defaults of the reference implementation: MixtralConfig, makeMoE's code).
  ModelConstants absent;
  int expert_hidden_per_d_model;  // > 0: expert_hidden's default as a multiple of d_model (makeMoE: 4)
};

const CheckpointLayout& hf_mixtral_layout();
const CheckpointLayout& makemoe_layout();
// The layout moe_train writes for a family: makeMoE for classic, Mixtral for llama.
const CheckpointLayout& layout_for(Family family);
// nullptr when no layout has that model_type.
const CheckpointLayout* layout_for_model_type(const std::string& model_type);
const char* supported_model_types();  // "'mixtral' and 'makemoe'": for messages

// The checkpoint tensor names that hold one tensor of the .moe layout, in row order
// (makeMoE keeps one q/k/v matrix per head; they are concatenated). `tied` maps
// Mixtral's lm_head to the embedding table.
std::vector<std::string> tensor_names(const CheckpointLayout& layout, const ModelConfig& config, const TensorSpec& spec,
                                      bool tied = false);

// A char vocabulary as one UTF-8 string (tokenizer.json's "chars"), and back; the
// reverse throws InputError("<what> is not valid UTF-8").
std::string chars_utf8(const std::vector<uint32_t>& chars);
std::vector<uint32_t> chars_from_utf8(const std::string& text, const std::string& what);

}  // namespace moe::converter
