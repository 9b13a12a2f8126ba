// A merge recipe: which models, which method, which parameters. The file syntax is
// mergekit's (YAML or JSON), so its documented recipes work here with local paths:
//
//   merge_method: ties                 # linear slerp task_arithmetic ties dare_linear
//   base_model: runs/base              #   dare_ties passthrough moe
//   models:
//     - model: runs/a
//       parameters: {weight: 0.5, density: 0.5}
//     - model: runs/b
//       parameters: {weight: [0, 1], density: 0.7}   # a list: a gradient over depth
//   parameters: {normalize: true, lambda: 1.0, seed: 7}
//
// slerp: base_model + one other model, `t` per tensor group or depth:
//   parameters: {t: [{filter: self_attn, value: [0, 0.5, 1]}, {filter: mlp, value: 0.3}, {value: 0.5}]}
// passthrough: slices: [{sources: [{model: runs/a, layer_range: [0, 6]}]}, ...]
// moe (mergekit-moe's format): base_model, gate_mode (hidden | cheap_embed | random, and
//   classifier: see merge.hpp),
//   experts_per_token, experts: [{source_model, positive_prompts, negative_prompts,
//   positive_prompts_file, negative_prompts_file, expert}]   (the _file keys: one file or
//   a list, each file one prompt; expert: which expert of an MoE donor; default 0)
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "moe/model_layout.hpp"

namespace moe::merge {

// A number that may vary by tensor group and by depth (mergekit's parameter syntax):
//   0.5                                     everywhere
//   [0, 0.5, 1]                             a gradient: anchors spread evenly over depth,
//                                           linearly interpolated between them
//   [{filter: self_attn, value: ...}, {value: 0.5}]   the first rule that matches
//   [{layers: [0, 4], value: 0.2}, {value: 0.8}]       a rule for layers [0, 4) only
// Filters: self_attn (or attention), mlp (experts and router), experts, router, norm,
// embed, lm_head, or any part of a tensor role name (wq, expert_w2, ...).
// Depth: layer l of L is at l / (L - 1); embeddings at 0; the final norm and lm_head at 1.
struct Setting {
  struct Rule {
    std::string filter;  // empty: matches every tensor
    std::vector<double> values;
    int first_layer = -1, end_layer = -1;  // -1: any tensor; else layers [first, end) only
  };
  std::vector<Rule> rules;  // empty: not given

  bool given() const { return !rules.empty(); }
  std::optional<double> at(const TensorSpec& spec, int n_layers) const;
  static Setting parse(const nlohmann::json& j, const std::string& what);  // throws InputError
  static Setting constant(double v) { return Setting{{Rule{"", {v}}}}; }
};

bool filter_matches(const std::string& filter, const TensorSpec& spec);

enum class MergeMethod : uint8_t { linear, slerp, task_arithmetic, ties, dare_linear, dare_ties, passthrough, moe };
const char* method_name(MergeMethod m);

enum class GateMode : uint8_t { hidden, cheap_embed, random, classifier };
const char* gate_mode_name(GateMode g);

struct RecipeModel {
  std::filesystem::path path;
  Setting weight, density;
};

struct RecipeSlice {
  std::filesystem::path model;
  int begin = 0, end = 0;  // layers [begin, end)
};

struct RecipeExpert {
  std::filesystem::path model;
  int expert = 0;                               // for MoE donors: which of its experts
  std::vector<std::string> positive, negative;  // prompts (files already read)
};

struct MergeRecipe {
  MergeMethod method = MergeMethod::linear;
  std::filesystem::path base;  // slerp (t = 0), task-vector methods, moe
  std::vector<RecipeModel> models;
  Setting t;                // slerp
  Setting weight, density;  // defaults for models that do not give their own
  std::optional<bool> normalize;
  double lambda = 1.0;
  uint64_t seed = 0;
  std::vector<RecipeSlice> slices;
  GateMode gate_mode = GateMode::hidden;
  int experts_per_token = 2;
  std::vector<RecipeExpert> experts;
  nlohmann::json source;  // the recipe as given, recorded in the output's config.json
};

// Reads a .yaml/.yml or .json recipe file (throws InputError naming the file and key).
// Bounds on a recipe file, checked before it is converted: its size, its nesting and
// the values its YAML aliases expand to.
inline constexpr size_t kMaxRecipeBytes = size_t{1} << 20;
inline constexpr int kMaxRecipeDepth = 64;
inline constexpr long kMaxRecipeNodes = 100000;

MergeRecipe load_recipe(const std::filesystem::path& file);
// The same from text (`what` names it in messages): YAML, or JSON when is_json. Throws
// InputError and nothing else, whatever the text (fuzz/fuzz_recipe.cpp holds it to that).
MergeRecipe parse_recipe_text(const std::string& text, bool is_json, const std::string& what);
// Builds a recipe from its JSON form (the command-line flags produce the same form).
MergeRecipe parse_recipe(const nlohmann::json& j);
// A YAML document as JSON (numbers, booleans and null by YAML 1.2's core schema).
nlohmann::json yaml_to_json(const std::string& text, const std::string& what);

}  // namespace moe::merge
