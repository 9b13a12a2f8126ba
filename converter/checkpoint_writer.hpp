// Writing a checkpoint directory in the layout of its family (checkpoint_layout.hpp):
// config.json, model.safetensors and, for char models, tokenizer.json. moe_train and
// moe_merge export through it, and so does the random-weight generator behind the
// benchmarks and the fuzz seeds.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "converter/checkpoint_layout.hpp"
#include "converter/safetensors.hpp"
#include "moe/config.hpp"
#include "moe/model_layout.hpp"

namespace moe::converter {

// What config.json records of the training recipe (moe_train), beside the model.
struct RecipeRecord {
  double dropout = 0.;                 // makemoe: "dropout"
  double router_aux_loss_coef = 0.02;  // hf-mixtral: "router_aux_loss_coef"
};

// config.json of the family's layout (layout_for), or of the given layout.
nlohmann::json checkpoint_config_json(const ModelConfig& config, const ModelConstants& constants,
                                      const RecipeRecord& recipe = {});
nlohmann::json checkpoint_config_json(const CheckpointLayout& layout, const ModelConfig& config,
                                      const ModelConstants& constants, const RecipeRecord& recipe = {});

// Appends one tensor of the .moe layout under its checkpoint name(s): makeMoE's
// per-head q/k/v matrices are split back into their parts.
void append_checkpoint_tensor(const ModelConfig& config, const TensorSpec& spec, const float* data,
                              std::vector<SafetensorOut>& out);

// Writes config.json (with `extra` merged in), model.safetensors (tensors sorted by
// name) and tokenizer.json when `chars` is non-empty; each file atomically.
void write_checkpoint(const std::filesystem::path& dir, const ModelConfig& config, const ModelConstants& constants,
                      std::vector<SafetensorOut> tensors, const std::vector<uint32_t>& chars,
                      const nlohmann::json& extra = nlohmann::json::object(), const RecipeRecord& recipe = {});

struct RandomCheckpointOptions {
  const CheckpointLayout* layout = nullptr;  // nullptr: the family's (layout_for)
  std::string dtype = "F32";                 // F32 | F16 | BF16
  uint64_t shard_bytes = 0;                  // > 0: shards of at most this many bytes, with an index
};

// A checkpoint of deterministic random weights: the same (config, seed) gives the same
// values on every platform (own generator, no std::distribution) and in every layout.
// Matrices are uniform with variance 1/cols (outputs keep the inputs' scale), norms 1,
// biases small. Written streaming: one tensor in memory at a time, so checkpoints of
// real models' size (tens of GB) can be made. `chars` empty: a token-id model.
void write_random_checkpoint(const std::filesystem::path& dir, const ModelConfig& config, uint64_t seed,
                             const std::vector<uint32_t>& chars = {}, const RandomCheckpointOptions& options = {});

}  // namespace moe::converter
