// Writing a checkpoint directory in either layout moe_convert reads (checkpoint.hpp):
// config.json, model.safetensors and, for char models, tokenizer.json. moe_train
// exports through it, and so does the random-weight generator behind the benchmarks
// and the fuzz seeds.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "converter/safetensors.hpp"
#include "moe/config.hpp"
#include "moe/model_file.hpp"
#include "moe/model_layout.hpp"

namespace moe::convert {

// What config.json records beyond the dimensions.
struct CheckpointHyper {
  float norm_eps = 1e-5f;
  float rope_theta = 1e6f;  // llama family
  AttentionScaleRule attention_scale = AttentionScaleRule::inv_sqrt_head_dim;  // classic family
  double capacity_factor = 0.;  // classic family; 0: none (written as null)
  double dropout = 0.;
  double aux_coef = 0.02;
};

// A char vocabulary as one UTF-8 string (tokenizer.json's "chars"), and back; the
// reverse throws ConvertError("<what> is not valid UTF-8").
std::string chars_utf8(const std::vector<uint32_t>& chars);
std::vector<uint32_t> chars_from_utf8(const std::string& text, const std::string& what);

// "makemoe" for the classic family, "hf-mixtral" for llama.
const char* checkpoint_format_for(const ModelConfig& config);

// config.json of that layout.
nlohmann::json checkpoint_config_json(const ModelConfig& config, const CheckpointHyper& hyper);

// Appends one tensor of the .moe layout under its checkpoint name(s): makeMoE's
// per-head q/k/v matrices are split back into their parts.
void append_checkpoint_tensor(const ModelConfig& config, const TensorSpec& spec, const float* data,
                              std::vector<SafetensorOut>& out);

// Writes config.json (with `extra` merged in), model.safetensors (tensors sorted by
// name) and tokenizer.json when `chars` is non-empty; each file atomically.
void write_checkpoint(const std::filesystem::path& dir, const ModelConfig& config, const CheckpointHyper& hyper,
                      std::vector<SafetensorOut> tensors, const std::vector<uint32_t>& chars,
                      const nlohmann::json& extra = nlohmann::json::object());

// A checkpoint of deterministic random weights: the same (config, seed) gives the same
// bytes on every platform (own generator, no std::distribution). Matrices are uniform
// with variance 1/cols (outputs keep the inputs' scale), norms 1, biases small.
// `chars` empty: a token-id model.
void write_random_checkpoint(const std::filesystem::path& dir, const ModelConfig& config, uint64_t seed,
                             const std::vector<uint32_t>& chars = {});

}  // namespace moe::convert
