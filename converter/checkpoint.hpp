// A checkpoint directory as moe_convert reads it, in one of the layouts of
// checkpoint_layout.hpp (moe_train writes one of them; there is no other).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "converter/checkpoint_layout.hpp"
#include "converter/safetensors.hpp"
#include "converter/tokenizer_json.hpp"
#include "moe/config.hpp"
#include "moe/model_layout.hpp"

namespace moe::converter {

struct Checkpoint {
  std::filesystem::path dir;
  const CheckpointLayout* layout = nullptr;
  ModelConfig config;
  ModelConstants constants;
  std::vector<uint32_t> chars;     // char tokenizer; empty: token-id model (or a BPE one)
  std::shared_ptr<const BpeTokenizerTables> bpe;  // a Hugging Face tokenizer.json, when there is one
  std::vector<std::string> notes;  // things the user should know (defaults taken, tensors ignored)
  std::unique_ptr<TensorStore> store;

  bool tied_embeddings = false;  // tie_word_embeddings, or no lm_head.weight: the head is the embedding table

  std::vector<TensorSource> sources(const TensorSpec& spec) const {
    return tensor_sources(*layout, config, spec, tied_embeddings);
  }
  std::vector<std::string> source_names(const TensorSpec& spec) const {
    return tensor_names(*layout, config, spec, tied_embeddings);
  }
  // That tensor as f32 [rows, cols]; throws naming the tensor when it is missing, has
  // another shape, an unsupported dtype, or a NaN/Inf.
  std::vector<float> load(const TensorSpec& spec) const;
  // Throws as load() would for a missing tensor or a wrong shape, reading no data.
  void check_sources(const TensorSpec& spec, const std::vector<TensorSource>& sources) const;
  // Checkpoint tensors no spec uses (training-only ones such as makeMoE's noise_linear).
  std::vector<std::string> unused_tensors() const;
};

// Reads config.json (and tokenizer.json) and indexes the tensors. `max_context`
// overrides the checkpoint's context length when > 0 (Mixtral's 32k would make a large
// KV cache; a model cannot be given more context than it was built for).
// `capacity_factor` >= 0 overrides the checkpoint's expert capacity (0: none).
Checkpoint open_checkpoint(const std::filesystem::path& dir, int max_context = 0, double capacity_factor = -1.);

}  // namespace moe::converter
