#include "trainer/merge/recipe.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "converter/input_error.hpp"
#include "converter/input_file.hpp"

namespace moe::merge {

using nlohmann::json;

// ---- Settings

bool filter_matches(const std::string& f, const TensorSpec& s) {
  const TensorRole r = s.role;
  const bool attention = r == TensorRole::wq || r == TensorRole::wk || r == TensorRole::wv || r == TensorRole::wo ||
                         r == TensorRole::wo_bias;
  const bool router = r == TensorRole::router || r == TensorRole::router_bias;
  const bool expert = s.expert >= 0;
  if (f.empty()) return true;
  if (f == "self_attn" || f == "attention") return attention;
  if (f == "mlp") return expert || router;
  if (f == "experts") return expert;
  if (f == "router" || f == "gate") return router;
  if (f == "norm") return std::string(role_name(r)).find("norm") != std::string::npos;
  if (f == "embed") return r == TensorRole::token_embedding || r == TensorRole::position_embedding;
  if (f == "lm_head") return r == TensorRole::lm_head || r == TensorRole::lm_head_bias;
  return std::string(role_name(r)).find(f) != std::string::npos;
}

std::optional<double> Setting::at(const TensorSpec& spec, int n_layers) const {
  double depth = 0;  // where the tensor sits, 0 (input side) .. 1 (output side)
  if (spec.layer >= 0) depth = n_layers > 1 ? static_cast<double>(spec.layer) / (n_layers - 1) : 0.0;
  else if (spec.role == TensorRole::final_norm || spec.role == TensorRole::final_norm_bias ||
           spec.role == TensorRole::lm_head || spec.role == TensorRole::lm_head_bias)
    depth = 1;
  for (const Rule& rule : rules) {
    if (!filter_matches(rule.filter, spec)) continue;
    if (rule.first_layer >= 0 && (spec.layer < rule.first_layer || spec.layer >= rule.end_layer)) continue;
    const auto& v = rule.values;
    if (v.size() == 1) return v[0];
    const double x = depth * static_cast<double>(v.size() - 1);
    const size_t i0 = std::min(static_cast<size_t>(x), v.size() - 2);
    const double frac = x - static_cast<double>(i0);
    return (1 - frac) * v[i0] + frac * v[i0 + 1];
  }
  return std::nullopt;
}

namespace {

std::vector<double> numbers(const json& j, const std::string& what) {
  std::vector<double> v;
  if (j.is_number()) v.push_back(j.get<double>());
  else if (j.is_array() && !j.empty() && std::all_of(j.begin(), j.end(), [](const json& e) { return e.is_number(); }))
    for (const json& e : j) v.push_back(e.get<double>());
  else throw InputError(what + " must be a number or a non-empty list of numbers (a gradient over depth)");
  for (double x : v)
    if (!std::isfinite(x)) throw InputError(what + " must be finite, found " + json(x).dump());
  return v;
}

// Every value a setting can take lies in [lo, hi] (lo excluded when `open_lo`).
void check_range(const std::optional<Setting>& s, double lo, double hi, bool open_lo, const std::string& what) {
  if (!s) return;
  for (const auto& rule : s->rules)
    for (double x : rule.values)
      if (x > hi || x < lo || (open_lo && x == lo))
        throw InputError(what + " must be in " + (open_lo ? "(" : "[") + json(lo).dump() + ", " + json(hi).dump() +
                         "], found " + json(x).dump());
}

}  // namespace

Setting Setting::parse(const json& j, const std::string& what) {
  Setting s;
  if (j.is_array() && !j.empty() && std::all_of(j.begin(), j.end(), [](const json& e) { return e.is_object(); })) {
    for (const json& rule : j) {
      for (const auto& [key, value] : rule.items())
        if (key != "filter" && key != "value" && key != "layers")
          throw InputError(what + ": unknown key '" + key + "' in a rule (filter, layers, value)");
      if (!rule.contains("value")) throw InputError(what + ": every rule needs a value");
      if (rule.contains("filter") && !rule["filter"].is_string())
        throw InputError(what + ": a filter must be a string");
      Rule parsed{rule.value("filter", ""), numbers(rule["value"], what)};
      if (rule.contains("layers")) {
        const json& l = rule["layers"];
        if (!l.is_array() || l.size() != 2 || !l[0].is_number_integer() || !l[1].is_number_integer() ||
            l[0].get<int>() < 0 || l[1].get<int>() <= l[0].get<int>())
          throw InputError(what + ": layers must be [first, end) with 0 <= first < end");
        parsed.first_layer = l[0].get<int>();
        parsed.end_layer = l[1].get<int>();
      }
      s.rules.push_back(std::move(parsed));
    }
    return s;
  }
  s.rules.push_back(Rule{"", numbers(j, what)});
  return s;
}

// ---- YAML

namespace {

// YAML 1.2 core-schema numbers (decimal only): [-+] digits [. digits] [e [-+] digits].
// Returns 0: not a number, 1: an integer, 2: a real.
int number_kind(const std::string& s) {
  size_t i = 0, digits = 0;
  bool real = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) ++digits;
  if (i < s.size() && s[i] == '.') {
    real = true;
    for (++i; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) ++digits;
  }
  if (digits == 0) return 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    real = true;
    if (++i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    size_t exp_digits = 0;
    for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) ++exp_digits;
    if (exp_digits == 0) return 0;
  }
  return i == s.size() ? (real ? 2 : 1) : 0;
}

// Converting walks aliases as often as they are used: a recipe whose aliases name their
// own ancestors never ends, and nested aliases multiply ("billion laughs"). Depth and
// the expanded node count are bounded, so both are refused within a few milliseconds.
json yaml_node_to_json(const YAML::Node& n, int depth, long& budget) {
  if (depth > kMaxRecipeDepth)
    throw InputError("nests deeper than " + std::to_string(kMaxRecipeDepth) +
                     " levels, or a YAML alias refers to a node that contains it");
  if (--budget < 0)
    throw InputError("expands to more than " + std::to_string(kMaxRecipeNodes) +
                     " values (YAML aliases repeat what they name)");
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return nullptr;
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& e : n) a.push_back(yaml_node_to_json(e, depth + 1, budget));
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = yaml_node_to_json(kv.second, depth + 1, budget);
      return o;
    }
    case YAML::NodeType::Scalar: break;
  }
  const std::string s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: always a string
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (s == "null" || s == "Null" || s == "NULL" || s == "~") return nullptr;
  const int kind = number_kind(s);
  if (kind == 1) return std::strtoll(s.c_str(), nullptr, 10);
  if (kind == 2) return std::strtod(s.c_str(), nullptr);
  return s;
}

// The deepest nesting of [ and { outside quoted strings: checked before a parser (whose
// copies and destructors recurse) sees the text.
int bracket_depth(const std::string& text) {
  int depth = 0, deepest = 0;
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quote != 0) {
      if (c == '\\' && quote == '"') ++i;
      else if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

void check_nesting(const std::string& text, const std::string& what) {
  if (bracket_depth(text) > kMaxRecipeDepth)
    throw InputError(what + " nests deeper than " + std::to_string(kMaxRecipeDepth) + " levels");
}

}  // namespace

json yaml_to_json(const std::string& text, const std::string& what) {
  check_nesting(text, what);
  try {
    long budget = kMaxRecipeNodes;
    return yaml_node_to_json(YAML::Load(text), 0, budget);
  } catch (const InputError& e) {
    throw InputError(what + " " + e.what());
  } catch (const YAML::Exception& e) {
    throw InputError(what + " is not valid YAML: " + e.what());
  }
}

// ---- Recipes

const char* method_name(MergeMethod m) {
  switch (m) {
    case MergeMethod::linear: return "linear";
    case MergeMethod::slerp: return "slerp";
    case MergeMethod::task_arithmetic: return "task_arithmetic";
    case MergeMethod::ties: return "ties";
    case MergeMethod::dare_linear: return "dare_linear";
    case MergeMethod::dare_ties: return "dare_ties";
    case MergeMethod::passthrough: return "passthrough";
    case MergeMethod::moe: return "moe";
  }
  return "?";
}

const char* gate_mode_name(GateMode g) {
  switch (g) {
    case GateMode::hidden: return "hidden";
    case GateMode::cheap_embed: return "cheap_embed";
    case GateMode::random: return "random";
    case GateMode::classifier: return "classifier";
  }
  return "?";
}

namespace {

void only_keys(const json& j, const std::string& where, std::initializer_list<const char*> allowed) {
  if (!j.is_object()) throw InputError(where + " must be a mapping");
  for (const auto& item : j.items()) {
    const std::string& key = item.key();
    if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; }))
      throw InputError(where + ": unknown key '" + key + "'");
  }
}

std::string text(const json& j, const std::string& what) {
  if (!j.is_string()) throw InputError(what + " must be a string");
  return j.get<std::string>();
}

std::vector<std::string> strings(const json& j, const std::string& what) {
  if (j.is_string()) return {j.get<std::string>()};
  if (!j.is_array() || std::any_of(j.begin(), j.end(), [](const json& e) { return !e.is_string(); }))
    throw InputError(what + " must be a list of strings");
  return j.get<std::vector<std::string>>();
}

std::string read_text_file(const std::filesystem::path& p, const std::string& what) {
  return converter::read_input_file(p, kMaxRecipeBytes, what);
}

}  // namespace

MergeRecipe parse_recipe(const json& j) {
  // mergekit keys this project has no use for (precision of the output, tokenizer
  // merging, mergekit's GPU options) are accepted and ignored.
  only_keys(j, "the recipe",
            {"merge_method", "base_model", "models", "slices", "parameters", "experts", "gate_mode",
             "experts_per_token", "dtype", "out_dtype", "tokenizer_source", "name", "seed"});
  MergeRecipe r;
  r.source = j;
  std::string method;
  if (j.contains("merge_method")) method = text(j["merge_method"], "merge_method");
  else if (j.contains("experts")) method = "moe";  // a mergekit-moe file
  else
    throw InputError(
        "the recipe has no merge_method (linear, slerp, task_arithmetic, ties, dare_linear, dare_ties, passthrough, "
        "moe)");
  const std::pair<const char*, MergeMethod> methods[] = {{"linear", MergeMethod::linear},
                                                         {"slerp", MergeMethod::slerp},
                                                         {"task_arithmetic", MergeMethod::task_arithmetic},
                                                         {"ties", MergeMethod::ties},
                                                         {"dare_linear", MergeMethod::dare_linear},
                                                         {"dare_ties", MergeMethod::dare_ties},
                                                         {"passthrough", MergeMethod::passthrough},
                                                         {"moe", MergeMethod::moe}};
  bool known = false;
  for (const auto& [name, m] : methods)
    if (method == name) r.method = m, known = true;
  if (!known)
    throw InputError("unknown merge_method '" + method +
                     "' (linear, slerp, task_arithmetic, ties, dare_linear, dare_ties, passthrough, moe)");

  if (j.contains("base_model")) r.base = text(j["base_model"], "base_model");
  const auto seed = [](const json& v, const char* what) {
    if (!v.is_number_integer() || v.get<long long>() < 0)
      throw InputError(std::string(what) + " must be a non-negative integer");
    return v.get<uint64_t>();
  };
  if (j.contains("seed")) r.seed = seed(j["seed"], "seed");
  if (j.contains("parameters")) {
    const json& p = j["parameters"];
    only_keys(p, "parameters", {"t", "weight", "density", "normalize", "lambda", "seed", "int8_mask", "rescale"});
    if (p.contains("t")) r.t = Setting::parse(p["t"], "parameters.t");
    check_range(r.t, 0, 1, false, "parameters.t");
    if (p.contains("weight")) r.weight = Setting::parse(p["weight"], "parameters.weight");
    if (p.contains("density")) r.density = Setting::parse(p["density"], "parameters.density");
    check_range(r.density, 0, 1, true, "parameters.density");
    if (p.contains("normalize")) {
      if (!p["normalize"].is_boolean()) throw InputError("parameters.normalize must be true or false");
      r.normalize = p["normalize"].get<bool>();
    }
    if (p.contains("lambda")) {
      if (!p["lambda"].is_number() || !std::isfinite(p["lambda"].get<double>()))
        throw InputError("parameters.lambda must be a finite number, found " + p["lambda"].dump());
      r.lambda = p["lambda"].get<double>();
    }
    if (p.contains("seed")) r.seed = seed(p["seed"], "parameters.seed");
  }
  if (j.contains("models")) {
    if (!j["models"].is_array()) throw InputError("models must be a list");
    for (const json& m : j["models"]) {
      const std::string where = "models[" + std::to_string(r.models.size()) + "]";
      RecipeModel rm;
      if (m.is_string()) {
        rm.path = m.get<std::string>();
      } else {
        only_keys(m, where, {"model", "parameters"});
        if (!m.contains("model")) throw InputError(where + " has no model");
        rm.path = text(m["model"], where + ".model");
        if (m.contains("parameters")) {
          const json& p = m["parameters"];
          only_keys(p, where + ".parameters", {"weight", "density"});
          if (p.contains("weight")) rm.weight = Setting::parse(p["weight"], where + ".parameters.weight");
          if (p.contains("density")) rm.density = Setting::parse(p["density"], where + ".parameters.density");
          check_range(rm.density, 0, 1, true, where + ".parameters.density");
        }
      }
      r.models.push_back(std::move(rm));
    }
  }
  if (j.contains("slices")) {
    if (!j["slices"].is_array()) throw InputError("slices must be a list");
    for (const json& s : j["slices"]) {
      const std::string where = "slices[" + std::to_string(r.slices.size()) + "]";
      only_keys(s, where, {"sources"});
      if (!s.contains("sources") || !s["sources"].is_array() || s["sources"].size() != 1)
        throw InputError(where + " must have exactly one source (passthrough stacks layer ranges)");
      const json& src = s["sources"][0];
      only_keys(src, where + ".sources[0]", {"model", "layer_range"});
      RecipeSlice sl;
      if (!src.contains("model")) throw InputError(where + ".sources[0] has no model");
      sl.model = text(src["model"], where + ".model");
      const json& range = src.contains("layer_range") ? src["layer_range"] : json();
      if (!range.is_array() || range.size() != 2 || !range[0].is_number_integer() || !range[1].is_number_integer())
        throw InputError(where + ".layer_range must be [first, end) as two integers");
      sl.begin = range[0].get<int>();
      sl.end = range[1].get<int>();
      if (sl.begin < 0 || sl.end <= sl.begin)
        throw InputError(where + ".layer_range [" + std::to_string(sl.begin) + ", " + std::to_string(sl.end) +
                         ") is empty or negative");
      r.slices.push_back(sl);
    }
  }
  if (j.contains("gate_mode")) {
    const std::string g = text(j["gate_mode"], "gate_mode");
    bool found = false;
    for (GateMode m : {GateMode::hidden, GateMode::cheap_embed, GateMode::random, GateMode::classifier})
      if (g == gate_mode_name(m)) r.gate_mode = m, found = true;
    if (!found) throw InputError("gate_mode must be hidden, cheap_embed, random or classifier (not '" + g + "')");
  }
  if (j.contains("experts_per_token")) {
    if (!j["experts_per_token"].is_number_integer() || j["experts_per_token"].get<int>() < 1)
      throw InputError("experts_per_token must be a positive integer");
    r.experts_per_token = j["experts_per_token"].get<int>();
  }
  if (j.contains("experts")) {
    if (!j["experts"].is_array()) throw InputError("experts must be a list");
    for (const json& e : j["experts"]) {
      const std::string where = "experts[" + std::to_string(r.experts.size()) + "]";
      only_keys(e, where,
                {"source_model", "positive_prompts", "negative_prompts", "positive_prompts_file",
                 "negative_prompts_file", "expert"});
      RecipeExpert x;
      if (!e.contains("source_model")) throw InputError(where + " has no source_model");
      x.model = text(e["source_model"], where + ".source_model");
      if (e.contains("expert")) {
        if (!e["expert"].is_number_integer() || e["expert"].get<int>() < 0)
          throw InputError(where + ".expert must be a non-negative integer");
        x.expert = e["expert"].get<int>();
      }
      if (e.contains("positive_prompts")) x.positive = strings(e["positive_prompts"], where + ".positive_prompts");
      if (e.contains("negative_prompts")) x.negative = strings(e["negative_prompts"], where + ".negative_prompts");
      for (const char* key : {"positive_prompts_file", "negative_prompts_file"}) {
        if (!e.contains(key)) continue;
        std::vector<std::string>& into = key[0] == 'p' ? x.positive : x.negative;
        for (const std::string& file : strings(e[key], where + "." + key))
          into.push_back(read_text_file(file, where + "." + key));
      }
      r.experts.push_back(std::move(x));
    }
  }

  // What each method needs.
  const auto need = [&](bool ok, const std::string& why) {
    if (!ok) throw InputError(std::string(method_name(r.method)) + " needs " + why);
  };
  switch (r.method) {
    case MergeMethod::linear: need(!r.models.empty(), "at least one model under models"); break;
    case MergeMethod::slerp:
      need(!r.base.empty(), "a base_model (t = 0)");
      need(r.models.size() == 2 || (r.models.size() == 1 && r.models[0].path != r.base),
           "base_model and exactly one other model under models (the base may be listed too)");
      need(r.t.given(), "parameters.t");
      break;
    case MergeMethod::task_arithmetic:
    case MergeMethod::ties:
    case MergeMethod::dare_linear:
    case MergeMethod::dare_ties:
      need(!r.base.empty(), "a base_model (task vectors are differences from it)");
      need(!r.models.empty(), "at least one model under models");
      break;
    case MergeMethod::passthrough: need(!r.slices.empty(), "slices (each a source model and a layer_range)"); break;
    case MergeMethod::moe:
      need(!r.base.empty(), "a base_model (attention, norms and embeddings come from it)");
      need(!r.experts.empty(), "experts (each a source_model)");
      need(r.experts_per_token <= static_cast<int>(r.experts.size()), "experts_per_token <= the number of experts");
      if (r.gate_mode != GateMode::random)
        for (size_t i = 0; i < r.experts.size(); ++i)
          need(!r.experts[i].positive.empty(), "positive_prompts (or positive_prompts_file) for experts[" +
                                                   std::to_string(i) + "] with gate_mode " +
                                                   gate_mode_name(r.gate_mode) + " (or gate_mode: random)");
      break;
  }
  return r;
}

MergeRecipe load_recipe(const std::filesystem::path& file) {
  return parse_recipe_text(read_text_file(file, "recipe"), file.extension() == ".json",
                           "recipe '" + file.string() + "'");
}

MergeRecipe parse_recipe_text(const std::string& body, bool is_json, const std::string& what) {
  if (body.size() > kMaxRecipeBytes) throw InputError(what + " is larger than 1 MiB");
  json j;
  if (is_json) {
    check_nesting(body, what);
    try {
      j = json::parse(body);
    } catch (const json::exception& e) {
      throw InputError(what + " is not valid JSON: " + e.what());
    }
  } else {
    j = yaml_to_json(body, what);
  }
  try {
    return parse_recipe(j);
  } catch (const InputError& e) {
    throw InputError(what + ": " + e.what());
  } catch (const json::exception& e) {
    throw InputError(what + ": " + e.what());
  }
}

}  // namespace moe::merge
