// What moe_train writes and reads:
//  - train_state.bin: everything needed to continue a run bit-exactly (config, vocabulary,
//    step, parameters, AdamW moments), checksummed, written atomically.
//  - the model as a checkpoint directory in the makeMoE layout (classic family) or the
//    Hugging Face Mixtral layout (llama family): config.json, model.safetensors,
//    tokenizer.json. moe_convert reads it with no extra step; PyTorch/transformers load it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "converter/checkpoint.hpp"
#include "trainer/model.hpp"
#include "trainer/train_config.hpp"

namespace moe::train {

struct TrainState {
  TrainConfig config;
  std::vector<uint32_t> vocab;
  int step = 0;  // steps completed
  std::vector<float> params, m, v;
};

void save_train_state(const std::filesystem::path& path, const TrainState& state);
TrainState load_train_state(const std::filesystem::path& path);  // throws InputError, naming what is wrong

// Writes config.json, model.safetensors and tokenizer.json into `dir` (created if needed).
void export_model(const std::filesystem::path& dir, const TrainConfig& config, const std::vector<uint32_t>& vocab,
                  const std::vector<ParamInfo>& table, const std::vector<float>& params);

// The TrainConfig that runs a checkpoint's forward pass as the engine would (no dropout,
// no router noise; its expert capacity). For evaluation and moe_merge's routers.
TrainConfig inference_config(const converter::Checkpoint& checkpoint);

// Reads a checkpoint directory (either layout) into a model of the same config; the
// router noise Linear is read when the checkpoint has it (makeMoE), else left as is.
// Returns the checkpoint's vocabulary (empty for token-id models).
template <class T>
std::vector<uint32_t> import_model(const std::filesystem::path& dir, Model<T>& model);

}  // namespace moe::train
