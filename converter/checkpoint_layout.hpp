// The checkpoint layouts moe_convert reads and moe_train, moe_merge and
// moe_random_checkpoint write, each described once: its config.json keys, the
// constants it implies when a key is absent, and its tensor names. The reader
// (checkpoint.cpp) and the writer (checkpoint_writer.cpp) both work from these
// descriptions and include neither each other nor anything but this.
//   hf-mixtral, hf-qwen2-moe, hf-qwen3-moe, hf-olmoe, hf-granitemoe: a Hugging Face
//               config.json (model_type "mixtral", "qwen2_moe", "qwen3_moe", "olmoe",
//               "granitemoe") + the Hub's tensor names, in model.safetensors or shards
//               named by model.safetensors.index.json
//   makemoe:    config.json (model_type "makemoe") + makeMoE's state_dict names +
//               tokenizer.json {"type": "char", "chars": "..."}
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/config.hpp"
#include "moe/model_layout.hpp"

namespace moe::converter {

// How a layout stores a model's experts.
enum class ExpertStorage : uint8_t {
  mixtral,  // block_sparse_moe.experts.E.{w1,w3,w2}: gate, up, down
  qwen,     // mlp.experts.E.{gate,up,down}_proj (Qwen-MoE, OLMoE)
  granite,  // block_sparse_moe.input_linear [E, 2I, d] (gate rows, then up), output_linear [E, d, I]
  makemoe,  // blocks.L.smoe.experts.E.net.{0,2}
};

struct CheckpointLayout {
  const char* name = nullptr;          // "hf-mixtral" | "makemoe" | ...: messages and the .moe provenance
  const char* model_type = nullptr;    // config.json's "model_type"
  const char* architecture = nullptr;  // config.json's "architectures" entry (transformers' class)
  Family family = Family::llama;
  // config.json key of each ModelConfig field; nullptr where the layout derives it
  // (makeMoE: n_kv_heads = n_heads, head_dim = d_model / n_heads).
  const char* d_model = nullptr;
  const char* n_layers = nullptr;
  const char* n_heads = nullptr;
  const char* n_kv_heads = nullptr;
  const char* head_dim = nullptr;
  const char* n_experts = nullptr;
  const char* top_k = nullptr;
  const char* expert_hidden = nullptr;
  const char* vocab_size = nullptr;
  const char* max_context = nullptr;
  // Keys of the constants; nullptr where the layout has none (the value is fixed).
  const char* norm_eps = nullptr;
  const char* rope_theta = nullptr;
  const char* attention_scale = nullptr;
  const char* capacity_factor = nullptr;
  // The constants a checkpoint of this layout has when config.json omits their keys
  // (the defaults of the reference implementation: MixtralConfig, makeMoE's code).
  ModelConstants absent{};
  int expert_hidden_per_d_model = 0;  // > 0: expert_hidden's default as a multiple of d_model (makeMoE: 4)

  // The Hugging Face families' parts (nullptr / none where the layout has no such key):
  ExpertStorage experts = ExpertStorage::mixtral;
  const char* router = nullptr;  // the router's tensor name after "model.layers.N."
  QkNorm qk_norm = QkNorm::none;
  const char* qkv_bias = nullptr;  // bool key ("qkv_bias"); absent: absent_qkv_bias
  bool absent_qkv_bias = false;
  const char* shared_expert_hidden = nullptr;  // "shared_expert_intermediate_size"
  const char* dense_hidden = nullptr;          // "intermediate_size" of Qwen-MoE's dense layers
  const char* normalize_top_k = nullptr;       // "norm_topk_prob": true -> RouterWeights::topk_softmax
  const char* clip_qkv = nullptr;
  const char* embedding_multiplier = nullptr;
  const char* residual_multiplier = nullptr;
  const char* logits_scaling = nullptr;
  const char* attention_multiplier = nullptr;
  // config.json keys this layout knows that do not change what inference computes
  // (training settings, metadata); nullptr-terminated. Any key not used and not here
  // is refused, naming it: moe_convert does not guess what an option means.
  const char* const* inert_keys = nullptr;
};

const CheckpointLayout& hf_mixtral_layout();
const CheckpointLayout& makemoe_layout();
bool is_hugging_face(const CheckpointLayout& layout);  // every layout but makeMoE
// The layout moe_train writes for a family: makeMoE for classic, Mixtral for llama.
const CheckpointLayout& layout_for(Family family);
// Why a config cannot be written in a layout (a part the layout has no place for), or
// nullptr when it can.
const char* layout_problem(const CheckpointLayout& layout, const ModelConfig& config);
// nullptr when no layout has that model_type.
const CheckpointLayout* layout_for_model_type(const std::string& model_type);
std::string supported_model_types();  // "'mixtral', ... and 'makemoe'": for messages

// Where one tensor of the .moe layout is in a checkpoint: one or more parts, in row
// order (makeMoE keeps one q/k/v matrix per head; they are concatenated), each a whole
// checkpoint tensor or a range of one (Granite keeps every expert's gate and up in one
// [E, 2I, d] tensor).
struct TensorSource {
  std::string name;
  std::vector<int64_t> shape;  // the checkpoint tensor's shape
  int64_t offset = 0;          // the part's first element in the flattened tensor
  int64_t count = 0;           // its elements
};
// `tied`: the output head is the embedding table (tie_word_embeddings).
std::vector<TensorSource> tensor_sources(const CheckpointLayout& layout, const ModelConfig& config,
                                         const TensorSpec& spec, bool tied = false);
// Their names.
std::vector<std::string> tensor_names(const CheckpointLayout& layout, const ModelConfig& config, const TensorSpec& spec,
                                      bool tied = false);

// A char vocabulary as one UTF-8 string (tokenizer.json's "chars"), and back; the
// reverse throws InputError("<what> is not valid UTF-8").
std::string chars_utf8(const std::vector<uint32_t>& chars);
std::vector<uint32_t> chars_from_utf8(const std::string& text, const std::string& what);

}  // namespace moe::converter
