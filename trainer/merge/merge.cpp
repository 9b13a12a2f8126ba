#include "trainer/merge/merge.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "converter/checkpoint_writer.hpp"
#include "converter/input_error.hpp"
#include "trainer/merge/merge_math.hpp"

namespace moe::merge {

using converter::Checkpoint;

std::string first_difference(const ModelConfig& a, const ModelConfig& b, const std::vector<std::string>& dims) {
  const std::pair<const char*, int ModelConfig::*> fields[] = {
      {"d_model", &ModelConfig::d_model},       {"n_layers", &ModelConfig::n_layers},
      {"n_heads", &ModelConfig::n_heads},       {"n_kv_heads", &ModelConfig::n_kv_heads},
      {"head_dim", &ModelConfig::head_dim},     {"n_experts", &ModelConfig::n_experts},
      {"top_k", &ModelConfig::top_k},           {"expert_hidden", &ModelConfig::expert_hidden},
      {"vocab_size", &ModelConfig::vocab_size}, {"max_context", &ModelConfig::max_context}};
  for (const std::string& dim : dims) {
    if (dim == "family") {
      if (a.family != b.family) return std::string("family: ") + family_name(a.family) + " vs " + family_name(b.family);
      continue;
    }
    for (const auto& [name, member] : fields)
      if (dim == name && a.*member != b.*member)
        return dim + ": " + std::to_string(a.*member) + " vs " + std::to_string(b.*member);
  }
  return "";
}

namespace {

const std::vector<std::string> kAllDims = {"family",        "d_model",    "n_layers",   "n_heads",
                                           "n_kv_heads",    "head_dim",   "n_experts",  "top_k",
                                           "expert_hidden", "vocab_size", "max_context"};

// The recipe's checkpoints, each opened once.
class Sources {
 public:
  const Checkpoint& get(const std::filesystem::path& p) {
    const std::string key = p.lexically_normal().string();
    auto it = open_.find(key);
    if (it == open_.end()) {
      if (!std::filesystem::is_directory(p)) throw InputError("model '" + p.string() + "' is not a directory");
      Checkpoint ck = converter::open_checkpoint(p);
      // The merged checkpoint is written in the layout moe_train writes (Mixtral or makeMoE):
      // another family's parts and constants would have no place there.
      if (ck.layout != &converter::layout_for(ck.config.family))
        throw InputError("model '" + p.string() + "' is a " + ck.layout->model_type + " checkpoint; moe_merge merges " +
                         converter::layout_for(Family::llama).model_type + " and " +
                         converter::layout_for(Family::classic).model_type + " checkpoints");
      it = open_.emplace(key, std::move(ck)).first;
    }
    return it->second;
  }

 private:
  std::map<std::string, Checkpoint> open_;
};

// Refuses b unless it matches a in `dims` and, for char models, in the vocabulary.
void require_compatible(const Checkpoint& a, const Checkpoint& b, const std::vector<std::string>& dims,
                        const std::string& why) {
  const std::string diff = first_difference(a.config, b.config, dims);
  if (!diff.empty())
    throw InputError("cannot merge '" + a.dir.string() + "' with '" + b.dir.string() + "' (" + why +
                     "): they differ in " + diff + " (" + ConfigKey(a.config).c_str() + " vs " +
                     ConfigKey(b.config).c_str() + ")");  // each pair in the same order: a, then b
  const bool needs_vocab = std::find(dims.begin(), dims.end(), "vocab_size") != dims.end();
  if (needs_vocab && a.chars != b.chars)
    throw InputError("cannot merge '" + a.dir.string() + "' with '" + b.dir.string() +
                     "': their tokenizer.json vocabularies differ (the same token id means a different character)");
}

std::string tensor_name(const TensorSpec& s) {
  char buf[96];
  describe_tensor(s.role, s.layer, s.expert, buf, sizeof buf);
  return buf;
}

// What config.json records of the merge: the recipe as given.
nlohmann::json provenance(const MergeRecipe& r) {
  return {{"moe_merge", {{"version", MOE_VERSION}, {"recipe", r.source}}}};
}

double setting_or(const Setting& own, const Setting& shared, const TensorSpec& spec, int layers, double fallback) {
  if (auto v = own.at(spec, layers)) return *v;
  if (auto v = shared.at(spec, layers)) return *v;
  return fallback;
}

}  // namespace

MergeResult run_merge(const MergeRecipe& r, const std::filesystem::path& out) {
  Sources sources;
  MergeResult result;
  std::vector<converter::SafetensorOut> tensors;
  const Checkpoint* first = nullptr;  // vocabulary and hyperparameters of the output
  ModelConfig& oc = result.config;

  if (r.method == MergeMethod::passthrough) {
    // Depth up-scaling: the output's layers are the slices' layers, in order.
    first = &sources.get(r.slices[0].model);
    struct Range {
      const Checkpoint* ck;
      int begin;
    };
    std::vector<Range> layer_source;
    for (size_t i = 0; i < r.slices.size(); ++i) {
      const RecipeSlice& s = r.slices[i];
      const Checkpoint& ck = sources.get(s.model);
      std::vector<std::string> dims = kAllDims;
      dims.erase(std::find(dims.begin(), dims.end(), "n_layers"));
      require_compatible(*first, ck, dims, "passthrough stacks layers of models of one shape");
      if (s.end > ck.config.n_layers)
        throw InputError("slices[" + std::to_string(i) + "].layer_range [" + std::to_string(s.begin) + ", " +
                         std::to_string(s.end) + ") goes past the " + std::to_string(ck.config.n_layers) +
                         " layers of '" + s.model.string() + "'");
      for (int l = s.begin; l < s.end; ++l) layer_source.push_back({&ck, l});
    }
    oc = first->config;
    oc.n_layers = static_cast<int>(layer_source.size());
    if (const char* why = config_problem(oc))
      throw InputError(std::string("the stacked model is not a valid config: ") + why);
    for_each_tensor_spec(oc, [&](const TensorSpec& spec) {
      TensorSpec from = spec;
      const Checkpoint* ck = first;
      if (spec.layer >= 0) {
        ck = layer_source[static_cast<size_t>(spec.layer)].ck;
        from.layer = layer_source[static_cast<size_t>(spec.layer)].begin;
      }
      const std::vector<float> v = ck->load(from);
      converter::append_checkpoint_tensor(oc, spec, v.data(), tensors);
    });
    converter::write_checkpoint(out, oc, first->constants, std::move(tensors), first->chars, provenance(r));
    return result;
  }

  if (r.method == MergeMethod::moe) {
    // frankenMoE: the base's attention, norms and embeddings; expert i = donor i's FFN.
    const Checkpoint& base = sources.get(r.base);
    first = &base;
    std::vector<const Checkpoint*> donors;
    for (size_t i = 0; i < r.experts.size(); ++i) {
      const Checkpoint& d = sources.get(r.experts[i].model);
      require_compatible(base, d, {"family", "d_model", "n_layers", "expert_hidden"},
                         "its FFNs become the base's experts");
      if (r.experts[i].expert >= d.config.n_experts)
        throw InputError("experts[" + std::to_string(i) + "].expert is " + std::to_string(r.experts[i].expert) +
                         " but '" + d.dir.string() + "' has " + std::to_string(d.config.n_experts) +
                         " expert(s) per layer");
      donors.push_back(&d);
    }
    oc = base.config;
    oc.n_experts = static_cast<int>(r.experts.size());
    oc.top_k = r.experts_per_token;
    if (const char* why = config_problem(oc))
      throw InputError(std::string("the mixture is not a valid config: ") + why);
    // Every tensor but the router: the base's, or donor i's FFN for expert i.
    const TensorSource tensor = [&](const TensorSpec& spec) {
      if (spec.expert < 0) return base.load(spec);
      TensorSpec from = spec;
      from.expert = r.experts[static_cast<size_t>(spec.expert)].expert;
      return donors[static_cast<size_t>(spec.expert)]->load(from);
    };
    const RouterInit router = router_init(base, r, oc, tensor);
    const long router_size = static_cast<long>(oc.n_experts) * oc.d_model;
    for_each_tensor_spec(oc, [&](const TensorSpec& spec) {
      std::vector<float> v;
      if (spec.role == TensorRole::router)
        v.assign(router.weight.begin() + spec.layer * router_size,
                 router.weight.begin() + (spec.layer + 1) * router_size);
      else if (spec.role == TensorRole::router_bias)
        v.assign(router.bias.begin() + spec.layer * oc.n_experts,
                 router.bias.begin() + (spec.layer + 1) * oc.n_experts);
      else v = tensor(spec);
      converter::append_checkpoint_tensor(oc, spec, v.data(), tensors);
    });
    ModelConstants h = base.constants;
    h.capacity_factor = 0;  // an assembled mixture has no training-time token dropping
    result.notes.push_back("expert capacity: none (the base's capacity factor is a training setting)");
    converter::write_checkpoint(out, oc, h, std::move(tensors), base.chars, provenance(r));
    return result;
  }

  // Element-wise methods: every model has the base's (or the first model's) shape.
  std::vector<const Checkpoint*> models;
  const Checkpoint* base = r.base.empty() ? nullptr : &sources.get(r.base);
  for (const RecipeModel& m : r.models) models.push_back(&sources.get(m.path));
  first = base ? base : models[0];
  for (const Checkpoint* m : models)
    require_compatible(*first, *m, kAllDims, std::string(method_name(r.method)) + " merges tensors element-wise");
  oc = first->config;
  const int L = oc.n_layers;

  // slerp interpolates from the base to the other model.
  const Checkpoint* slerp_to = nullptr;
  if (r.method == MergeMethod::slerp)
    for (const Checkpoint* m : models)
      if (m != base) slerp_to = m;
  // Task-vector methods: a base listed among the models contributes a zero delta.
  std::vector<size_t> contributors;
  for (size_t i = 0; i < models.size(); ++i)
    if (models[i] != base) contributors.push_back(i);

  std::vector<size_t> every_model(models.size());
  for (size_t i = 0; i < models.size(); ++i) every_model[i] = i;

  const bool task_vectors = r.method == MergeMethod::task_arithmetic || r.method == MergeMethod::ties ||
                            r.method == MergeMethod::dare_linear || r.method == MergeMethod::dare_ties;
  TaskVectorOptions tv;
  tv.sparsify = r.method == MergeMethod::ties                                                  ? Sparsify::magnitude
                : (r.method == MergeMethod::dare_linear || r.method == MergeMethod::dare_ties) ? Sparsify::random
                                                                                               : Sparsify::none;
  tv.consensus =
      (r.method == MergeMethod::ties || r.method == MergeMethod::dare_ties) ? Consensus::sign : Consensus::none;
  tv.normalize = r.normalize.value_or(r.method != MergeMethod::task_arithmetic);
  tv.lambda = r.lambda;
  tv.seed = r.seed;

  long parallel_fallbacks = 0, index = 0;
  for_each_tensor_spec(oc, [&](const TensorSpec& spec) {
    const long n = spec.elements();
    std::vector<float> merged(static_cast<size_t>(n));
    if (r.method == MergeMethod::slerp) {
      const auto t = r.t.at(spec, L);
      if (!t) throw InputError("parameters.t has no rule for " + tensor_name(spec) + ": add a rule without a filter");
      const std::vector<float> a = base->load(spec), b = slerp_to->load(spec);
      parallel_fallbacks += slerp(a.data(), b.data(), n, *t, merged.data());
    } else {
      std::vector<std::vector<float>> data;
      std::vector<const float*> ptrs;
      std::vector<double> weights, densities;
      const std::vector<size_t>& use = task_vectors ? contributors : every_model;
      data.reserve(use.size());
      for (size_t i : use) {
        data.push_back(models[i]->load(spec));
        ptrs.push_back(data.back().data());
        weights.push_back(setting_or(r.models[i].weight, r.weight, spec, L, 1.0));
        densities.push_back(setting_or(r.models[i].density, r.density, spec, L, 1.0));
        if (densities.back() < 0 || densities.back() > 1)
          throw InputError("density " + std::to_string(densities.back()) + " for " + tensor_name(spec) +
                           " is outside [0, 1]");
      }
      if (task_vectors) {
        const std::vector<float> b = base->load(spec);
        tv.stream = static_cast<uint64_t>(index);
        merge_task_vectors(b.data(), ptrs, weights, densities, n, tv, merged.data());
      } else {
        if (std::all_of(weights.begin(), weights.end(), [](double w) { return w == 0; }))
          throw InputError("every model's weight for " + tensor_name(spec) +
                           " is 0: the merge would be all zeros (or 0/0 when normalized)");
        linear(ptrs, weights, r.normalize.value_or(true), n, merged.data());
      }
    }
    // Whatever the options, nothing non-finite is published (moe_convert would refuse it).
    for (long i = 0; i < n; ++i)
      if (!std::isfinite(merged[static_cast<size_t>(i)]))
        throw InputError("merging gives a " +
                         std::string(std::isnan(merged[static_cast<size_t>(i)]) ? "NaN" : "infinite value") + " in " +
                         tensor_name(spec) + " (element " + std::to_string(i) +
                         "): the weights or options overflow; nothing was written");
    converter::append_checkpoint_tensor(oc, spec, merged.data(), tensors);
    ++index;
  });
  if (parallel_fallbacks > 0)
    result.notes.push_back("slerp: " + std::to_string(parallel_fallbacks) +
                           " nearly parallel tensor(s) were interpolated linearly");
  if (task_vectors && contributors.empty()) result.notes.push_back("every model is the base: the output is the base");
  converter::write_checkpoint(out, oc, first->constants, std::move(tensors), first->chars, provenance(r));
  return result;
}

}  // namespace moe::merge
