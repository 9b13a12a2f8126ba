// moe_merge: combine trained checkpoints without training (mergekit's methods), or
// assemble dense specialists into one Mixture-of-Experts. Reads and writes checkpoint
// directories, so the result goes through moe_convert like any other model.
//
//   moe_merge --config recipe.yaml --out merged                     # a mergekit-style recipe
//   moe_merge --method linear --model a --model b --out avg         # or flags
//   moe_merge --method slerp --base a --model b --t 0.3 --out s
//   moe_merge --method ties --base base --model a --model b --density 0.5 --out t
//   moe_merge --method passthrough --slice a:0:6 --slice b:2:8 --out deep
//   moe_merge --method moe --base base --expert spec1 --prompts spec1.txt --expert spec2 --prompts spec2.txt --out moe
#include <CLI/CLI.hpp>
#include <cstdio>

#include "converter/input_file.hpp"
#include "converter/input_error.hpp"
#include "tools/cli_support.hpp"
#include "trainer/merge/merge.hpp"

namespace {

using nlohmann::json;

// --slice MODEL:FIRST:END (the model path may itself contain ':').
json slice_json(const std::string& arg) {
  const size_t b = arg.rfind(':');
  const size_t a = b == std::string::npos || b == 0 ? std::string::npos : arg.rfind(':', b - 1);
  if (a == std::string::npos) throw moe::InputError("--slice '" + arg + "' is not MODEL:FIRST:END");
  try {
    return {{"sources",
             {{{"model", arg.substr(0, a)},
               {"layer_range", {std::stoi(arg.substr(a + 1, b - a - 1)), std::stoi(arg.substr(b + 1))}}}}}};
  } catch (const std::logic_error&) {
    throw moe::InputError("--slice '" + arg + "': FIRST and END must be layer numbers");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const moe::converter::RecordInputs record_inputs;  // no output may replace what this run reads
  CLI::App app{
      "moe_merge: merge checkpoints (linear, slerp, task_arithmetic, ties, dare_linear, dare_ties, passthrough) or "
      "build a "
      "Mixture-of-Experts from dense specialists (moe)"};
  std::string config, out, method, base, gate_mode = "hidden";
  std::vector<std::string> models, slices, experts, prompts;
  std::vector<double> weights, densities;
  double t = 0.5, lambda = 1.0;
  uint64_t seed = 0;
  int experts_per_token = 2;
  bool no_normalize = false;
  auto* config_opt = app.add_option("-c,--config", config, "recipe file (.yaml/.yml or .json, mergekit's syntax)");
  app.add_option("--out", out, "checkpoint directory to write (created if needed)")->required();
  auto* method_opt =
      app.add_option("--method", method,
                     "linear | slerp | task_arithmetic | ties | dare_linear | dare_ties | passthrough | moe")
          ->excludes(config_opt);
  std::vector<CLI::Option*> flags = {
      app.add_option("--base", base,
                     "base model: slerp's t = 0, the task-vector methods' reference, moe's attention and embeddings"),
      app.add_option("--model", models, "a model to merge (repeat)"),
      app.add_option("--weight", weights, "weight of each --model, in order (default 1)"),
      app.add_option("--density", densities,
                     "fraction of each task vector kept (ties, dare_*): one value, or one per --model"),
      app.add_option("--t", t, "slerp: 0 = base, 1 = the other model")->capture_default_str(),
      app.add_option("--lambda", lambda, "scale of the merged task vector")->capture_default_str(),
      app.add_flag("--no-normalize", no_normalize, "do not divide by the sum of the weights"),
      app.add_option("--slice", slices,
                     "passthrough: MODEL:FIRST:END, layers [FIRST, END) of MODEL (repeat, in order)"),
      app.add_option("--expert", experts, "moe: a donor model whose FFN becomes the next expert (repeat)"),
      app.add_option("--prompts", prompts,
                     "moe: a text file of the matching --expert's positive prompts (repeat, in order)"),
      app.add_option("--gate-mode", gate_mode, "moe: hidden | cheap_embed | random | classifier")
          ->capture_default_str(),
      app.add_option("--experts-per-token", experts_per_token, "moe: top-k of the new router")->capture_default_str(),
  };
  for (CLI::Option* f : flags) f->excludes(config_opt);
  app.add_option("--seed", seed, "seed of DARE's drops and of a random router")->capture_default_str();
  if (const int code = moe::tools::parse_command_line(app, argc, argv); code >= 0) return code;

  try {
    moe::merge::MergeRecipe recipe;
    if (!config.empty()) {
      recipe = moe::merge::load_recipe(config);
      if (app.get_option("--seed")->count()) recipe.seed = seed;
    } else {
      if (!method_opt->count()) throw moe::InputError("give --config RECIPE or --method (see --help)");
      json j = {{"merge_method", method}, {"parameters", {{"seed", seed}, {"lambda", lambda}}}};
      if (!base.empty()) j["base_model"] = base;
      if (no_normalize) j["parameters"]["normalize"] = false;
      if (app.get_option("--t")->count()) j["parameters"]["t"] = t;
      if (!weights.empty() && weights.size() != models.size())
        throw moe::InputError("give one --weight per --model (" + std::to_string(models.size()) + ")");
      if (densities.size() > 1 && densities.size() != models.size())
        throw moe::InputError("give one --density, or one per --model (" + std::to_string(models.size()) + ")");
      if (densities.size() == 1) j["parameters"]["density"] = densities[0];
      for (size_t i = 0; i < models.size(); ++i) {
        json m = {{"model", models[i]}, {"parameters", json::object()}};
        if (!weights.empty()) m["parameters"]["weight"] = weights[i];
        if (densities.size() > 1) m["parameters"]["density"] = densities[i];
        j["models"].push_back(m);
      }
      for (const std::string& s : slices) j["slices"].push_back(slice_json(s));
      if (!experts.empty()) {
        if (!prompts.empty() && prompts.size() != experts.size())
          throw moe::InputError("give one --prompts file per --expert (" + std::to_string(experts.size()) + ")");
        j["gate_mode"] = gate_mode;
        j["experts_per_token"] = experts_per_token;
        for (size_t i = 0; i < experts.size(); ++i) {
          json e = {{"source_model", experts[i]}};
          if (!prompts.empty()) e["positive_prompts_file"] = prompts[i];
          j["experts"].push_back(e);
        }
      }
      recipe = moe::merge::parse_recipe(j);
    }
    const moe::merge::MergeResult result = moe::merge::run_merge(recipe, out);
    std::printf("%s: %s merge -> %s\n", out.c_str(), moe::merge::method_name(recipe.method),
                moe::ConfigKey(result.config).c_str());
    for (const std::string& note : result.notes) std::printf("  note: %s\n", note.c_str());
    return 0;
  } catch (const moe::InputError& e) {
    std::fprintf(stderr, "moe_merge: %s\n", e.what());
    return 1;
  }
}
