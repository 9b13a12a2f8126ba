// moe_merge's engine room: opens the recipe's checkpoints, checks that they can be
// merged (naming the dimension that differs when not), merges tensor by tensor and
// writes a checkpoint directory that moe_convert reads like any other.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "converter/checkpoint.hpp"
#include "trainer/merge/recipe.hpp"

namespace moe::merge {

struct MergeResult {
  ModelConfig config;              // of the merged model
  std::vector<std::string> notes;  // things the user should know (fallbacks, defaults taken)
};

// Merges and writes config.json, model.safetensors (and tokenizer.json) into `out`, each
// file atomically. Throws InputError before writing anything when the inputs do not fit.
MergeResult run_merge(const MergeRecipe& recipe, const std::filesystem::path& out);

// The frankenMoE router, per layer one row per expert: weight [layers][experts][d_model],
// bias [layers][experts] (classic family; zero unless fitted).
//   hidden      mergekit-moe's method: the mean residual stream the base produces at that
//               layer's input for the expert's positive prompts, minus that of its negative
//               prompts, normalised
//   cheap_embed the mean token embedding of the prompts, normalised
//   random      seeded Gaussian directions, normalised
//   classifier  a logistic regression of "whose prompts is this token from" on the
//               router's actual input (the normalised residual after attention), fitted
//               layer by layer in the assembled mixture
struct RouterInit {
  std::vector<float> weight, bias;
};
// `tensor` gives every other tensor of the mixture (config `mixture`), for the classifier.
using TensorSource = std::function<std::vector<float>(const TensorSpec&)>;
RouterInit router_init(const converter::Checkpoint& base, const MergeRecipe& recipe, const ModelConfig& mixture,
                       const TensorSource& tensor);

// Which dimension of b differs from a's, as "d_model: 64 vs 128", or "" when none of
// `dims` does. dims: names as in ModelConfig ("d_model", "n_layers", ...; "family").
std::string first_difference(const ModelConfig& a, const ModelConfig& b, const std::vector<std::string>& dims);

}  // namespace moe::merge
