#include "converter/checkpoint.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "converter/input_error.hpp"
#include "converter/input_file.hpp"
#include "moe/tokenizer.hpp"

namespace moe::converter {

using nlohmann::json;

namespace {

// 1e6 rather than 1e+06: as people write it in config.json.
std::string compact_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  std::string s;
  for (const char* p = buf; *p != '\0'; ++p) {
    s += *p;
    if (*p == 'e')
      while (p[1] == '+' || p[1] == '0') ++p;
  }
  return s;
}

// A positive integer field of config.json; `fallback` < 0 means required.
int int_field(const json& cfg, const char* key, const std::filesystem::path& file, int fallback = -1) {
  if (!cfg.contains(key) || cfg[key].is_null()) {
    if (fallback >= 0) return fallback;
    throw InputError("'" + file.string() + "' has no '" + key + "'");
  }
  const json& v = cfg[key];
  if (!v.is_number_integer() || v.get<long long>() <= 0 || v.get<long long>() > (1ll << 30))
    throw InputError("'" + file.string() + "': '" + key + "' must be a positive integer, found " + v.dump());
  return static_cast<int>(v.get<long long>());
}

float float_field(const json& cfg, const char* key, const std::filesystem::path& file, float fallback) {
  if (!cfg.contains(key) || cfg[key].is_null()) return fallback;
  if (!cfg[key].is_number())
    throw InputError("'" + file.string() + "': '" + key + "' must be a number, found " + cfg[key].dump());
  const double v = cfg[key].get<double>();
  if (!std::isfinite(static_cast<float>(v)))
    throw InputError("'" + file.string() + "': '" + key + "' is " + compact_number(v) + ", beyond a float's range");
  return static_cast<float>(v);
}

// A norm's epsilon: 0 < eps < 1, as the loader requires.
float norm_eps_field(const json& cfg, const char* key, const std::filesystem::path& file, float fallback) {
  const float eps = float_field(cfg, key, file, fallback);
  if (!(eps > 0.f && eps < 1.f))
    throw InputError("'" + file.string() + "': '" + key + "' is " + compact_number(eps) + "; it must be in (0, 1)");
  return eps;
}

// A token id: absent, null or a list (none we use) is -1; otherwise it must name a token.
int32_t token_id_field(const json& cfg, const char* key, int vocab_size, const std::filesystem::path& file) {
  if (!cfg.contains(key) || !cfg[key].is_number_integer()) return -1;
  const json& v = cfg[key];
  const bool in_range = v.is_number_unsigned()
                            ? v.get<unsigned long long>() < static_cast<unsigned long long>(vocab_size)
                            : v.get<long long>() >= 0 && v.get<long long>() < vocab_size;
  if (!in_range)
    throw InputError("'" + file.string() + "': '" + key + "' is " + v.dump() + ", outside the vocabulary [0, " +
                     std::to_string(vocab_size) + ")");
  return static_cast<int32_t>(v.get<long long>());
}

std::vector<uint32_t> read_char_tokenizer(const std::filesystem::path& path) {
  const json tok = read_json_file(path);
  if (!tok.is_object() || tok.value("type", "") != "char" || !tok.contains("chars") || !tok["chars"].is_string())
    throw InputError("'" + path.string() + "' is not a char tokenizer ({\"type\": \"char\", \"chars\": \"...\"})");
  const std::vector<uint32_t> out = chars_from_utf8(tok["chars"].get<std::string>(), "'" + path.string() + "': chars");
  std::set<uint32_t> unique(out.begin(), out.end());
  if (unique.size() != out.size()) throw InputError("'" + path.string() + "': chars lists a character twice");
  return out;
}

// A bool field of config.json; absent or null: fallback.
bool bool_field(const json& cfg, const char* key, const std::filesystem::path& file, bool fallback) {
  if (!cfg.contains(key) || cfg[key].is_null()) return fallback;
  if (!cfg[key].is_boolean())
    throw InputError("'" + file.string() + "': '" + key + "' must be true or false, found " + cfg[key].dump());
  return cfg[key].get<bool>();
}

// A multiplier: finite and > 0.
float positive_field(const json& cfg, const char* key, const std::filesystem::path& file, float fallback) {
  const float v = float_field(cfg, key, file, fallback);
  if (!(v > 0.f))
    throw InputError("'" + file.string() + "': '" + key + "' is " + compact_number(v) + "; it must be > 0");
  return v;
}

[[noreturn]] void refuse_option(const std::filesystem::path& file, const CheckpointLayout& k, const std::string& key,
                                const json& value, const std::string& why) {
  throw InputError("'" + file.string() + "': " + k.model_type + " option '" + key + "' = " + value.dump() + " " + why +
                   "; moe_convert refuses rather than convert a model that computes something else");
}

// Layers that are dense MLPs, not MoE (Qwen-MoE): mlp_only_layers and decoder_sparse_step,
// as Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer decide.
uint64_t dense_layer_mask(const json& cfg, const CheckpointLayout& k, int n_layers, const std::filesystem::path& file) {
  std::vector<bool> dense(static_cast<size_t>(n_layers), false);
  if (cfg.contains("mlp_only_layers") && !cfg["mlp_only_layers"].is_null()) {
    const json& list = cfg["mlp_only_layers"];
    if (!list.is_array()) refuse_option(file, k, "mlp_only_layers", list, "is not a list of layer indices");
    for (const json& v : list) {
      if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() >= n_layers)
        refuse_option(file, k, "mlp_only_layers", list, "names a layer outside 0.." + std::to_string(n_layers - 1));
      dense[static_cast<size_t>(v.get<long long>())] = true;
    }
  }
  const int step = int_field(cfg, "decoder_sparse_step", file, 1);
  for (int l = 0; l < n_layers; ++l)
    if ((l + 1) % step != 0) dense[static_cast<size_t>(l)] = true;
  uint64_t mask = 0;
  for (int l = 0; l < n_layers; ++l) {
    if (!dense[static_cast<size_t>(l)]) continue;
    if (l >= 64)
      throw InputError("'" + file.string() + "': layer " + std::to_string(l) +
                       " is a dense MLP layer; the engine places dense layers among the first 64 layers only");
    mask |= uint64_t{1} << l;
  }
  if (mask != 0 && n_layers <= 64 && mask == (n_layers == 64 ? ~uint64_t{0} : (uint64_t{1} << n_layers) - 1))
    throw InputError("'" + file.string() + "': every layer is a dense MLP: not a mixture-of-experts model");
  return mask;
}

// A Hugging Face config.json (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, Granite-MoE), in the
// transformers 4.x or 5 layout. Every key is either read, known to be inert (training
// settings, metadata) or refused by name.
void open_hugging_face(Checkpoint& ck, const json& cfg, const std::filesystem::path& file, const CheckpointLayout& k) {
  ModelConfig& c = ck.config;
  ModelConstants& m = ck.constants;
  std::set<std::string> read = {"model_type", "tie_word_embeddings", "bos_token_id", "eos_token_id", "hidden_act"};
  const auto key = [&](const char* name) {
    if (name != nullptr) read.insert(name);
    return name;
  };
  c.family = k.family;
  c.d_model = int_field(cfg, key(k.d_model), file);
  c.n_layers = int_field(cfg, key(k.n_layers), file);
  c.n_heads = int_field(cfg, key(k.n_heads), file);
  c.n_kv_heads = int_field(cfg, key(k.n_kv_heads), file, c.n_heads);
  const bool head_dim_given = k.head_dim != nullptr && cfg.contains(k.head_dim) && cfg[k.head_dim].is_number_integer();
  if (c.d_model % c.n_heads != 0 && !head_dim_given)
    throw InputError("'" + file.string() + "': " + k.d_model + " " + std::to_string(c.d_model) +
                     " is not divisible by " + k.n_heads + " " + std::to_string(c.n_heads) +
                     (k.head_dim != nullptr ? std::string(" and ") + k.head_dim + " is not given" : std::string()));
  c.head_dim =
      k.head_dim != nullptr ? int_field(cfg, key(k.head_dim), file, c.d_model / c.n_heads) : c.d_model / c.n_heads;
  if (k.head_dim == nullptr) read.insert("head_dim");  // not read by this family's code (Granite): inert
  // transformers 5 may write Qwen3-MoE's num_experts under its attribute-map name.
  const char* experts_key =
      cfg.contains(k.n_experts) || !cfg.contains("num_local_experts") ? k.n_experts : "num_local_experts";
  c.n_experts = int_field(cfg, key(experts_key), file);
  c.top_k = int_field(cfg, key(k.top_k), file);
  c.expert_hidden = int_field(cfg, key(k.expert_hidden), file);
  c.vocab_size = int_field(cfg, key(k.vocab_size), file);
  c.max_context = int_field(cfg, key(k.max_context), file);
  m = k.absent;
  m.norm_eps = norm_eps_field(cfg, key(k.norm_eps), file, k.absent.norm_eps);

  // Structure: the optional parts of the family.
  c.qk_norm = k.qk_norm;
  c.qkv_bias = k.qkv_bias != nullptr && bool_field(cfg, key(k.qkv_bias), file, k.absent_qkv_bias);
  if (k.shared_expert_hidden != nullptr) {
    read.insert(k.shared_expert_hidden);
    if (cfg.contains(k.shared_expert_hidden) && !cfg[k.shared_expert_hidden].is_null() &&
        cfg[k.shared_expert_hidden] != 0)
      c.shared_expert_hidden = int_field(cfg, k.shared_expert_hidden, file);
  }
  if (k.dense_hidden != nullptr) {
    read.insert({"mlp_only_layers", "decoder_sparse_step"});
    c.dense_layers = dense_layer_mask(cfg, k, c.n_layers, file);
    read.insert(k.dense_hidden);  // also inert when no layer is dense
    if (c.dense_layers != 0) c.dense_hidden = int_field(cfg, k.dense_hidden, file);
  }

  // rope_theta: transformers 5 nests it in rope_parameters; older configs keep it on top.
  read.insert({"rope_parameters", "rope_scaling", "rope_theta"});
  const json* rope = nullptr;
  // Both spellings are checked (a file may carry both); the first gives rope_theta.
  // partial_rotary_factor 1 (every dimension rotated) is the default RoPE too.
  const auto full_rotation = [&](const json& v) { return v.is_number() && v.get<double>() == 1.0; };
  for (const char* rk : {"rope_parameters", "rope_scaling"}) {
    if (!cfg.contains(rk) || cfg[rk].is_null()) continue;
    if (!cfg[rk].is_object()) refuse_option(file, k, rk, cfg[rk], "is not an object");
    const json& r = cfg[rk];
    const std::string type = r.value("rope_type", r.value("type", std::string("default")));
    if (type != "default")
      throw InputError("'" + file.string() + "': rope type '" + type + "' is not supported (only the default RoPE)");
    for (const auto& [rk2, rv] : r.items())
      if (rk2 != "rope_type" && rk2 != "type" && rk2 != k.rope_theta &&
          !(rk2 == "partial_rotary_factor" && full_rotation(rv)))
        refuse_option(file, k, std::string(rk) + "." + rk2, rv, "is not implemented (only the default RoPE)");
    if (rope == nullptr) rope = &r;
  }
  read.insert("partial_rotary_factor");
  if (cfg.contains("partial_rotary_factor") && !cfg["partial_rotary_factor"].is_null() &&
      !full_rotation(cfg["partial_rotary_factor"]))
    refuse_option(file, k, "partial_rotary_factor", cfg["partial_rotary_factor"],
                  "is not implemented (RoPE over every dimension only)");
  if (rope != nullptr && rope->contains(k.rope_theta)) m.rope_theta = float_field(*rope, k.rope_theta, file, 0.f);
  else if (cfg.contains(k.rope_theta)) m.rope_theta = float_field(cfg, k.rope_theta, file, 0.f);
  else {
    m.rope_theta = k.absent.rope_theta;
    ck.notes.push_back(std::string("config.json gives no rope_theta: using the ") + k.model_type + " default " +
                       compact_number(m.rope_theta));
  }
  if (!(m.rope_theta > 1.f) || !std::isfinite(m.rope_theta))
    throw InputError("'" + file.string() + "': rope_theta must be a finite number > 1");

  const std::string act = cfg.value("hidden_act", std::string("silu"));
  if (act != "silu")
    throw InputError("'" + file.string() + "': hidden_act '" + act + "' is not supported (the experts use silu)");

  // Sliding-window attention: Mixtral's is on whenever sliding_window is a number; the
  // Qwen families' only with use_sliding_window (real Qwen1.5-MoE ships a window of
  // 32768 with use_sliding_window false: then it is ignored, as transformers does).
  read.insert({"sliding_window", "use_sliding_window", "max_window_layers", "layer_types"});
  const bool window_switch = cfg.contains("use_sliding_window");
  const bool window_on = window_switch ? bool_field(cfg, "use_sliding_window", file, false) : true;
  if (window_on && cfg.contains("sliding_window") && cfg["sliding_window"].is_number_integer() &&
      cfg["sliding_window"].get<long long>() > 0 && cfg["sliding_window"].get<long long>() < c.max_context)
    throw InputError("'" + file.string() + "': sliding_window " + cfg["sliding_window"].dump() +
                     " is smaller than the context; sliding-window attention is not supported (pass --max-context " +
                     cfg["sliding_window"].dump() + " to stay inside the window)");
  if (cfg.contains("layer_types") && !cfg["layer_types"].is_null()) {
    const json& types = cfg["layer_types"];
    if (!types.is_array()) refuse_option(file, k, "layer_types", types, "is not a list");
    for (const json& t : types)
      if (!(t.is_string() && t.get<std::string>() == "full_attention") &&
          !(t.is_string() && t.get<std::string>() == "sliding_attention" && !window_on))
        refuse_option(file, k, "layer_types", types, "has a layer that is not full attention");
  }

  // Biases the family does not have.
  read.insert({"attention_bias", "mlp_bias"});
  if (bool_field(cfg, "attention_bias", file, false))
    refuse_option(file, k, "attention_bias", cfg["attention_bias"],
                  c.qkv_bias ? "(a bias on o_proj too) is not implemented" : "is not implemented");
  if (bool_field(cfg, "mlp_bias", file, false))
    refuse_option(file, k, "mlp_bias", cfg["mlp_bias"], "is not implemented");

  // Constants.
  if (k.normalize_top_k != nullptr)
    m.router_weights =
        bool_field(cfg, key(k.normalize_top_k), file, k.absent.router_weights == RouterWeights::topk_softmax)
            ? RouterWeights::topk_softmax
            : RouterWeights::full_softmax;
  if (k.clip_qkv != nullptr) {
    read.insert(k.clip_qkv);
    if (cfg.contains(k.clip_qkv) && !cfg[k.clip_qkv].is_null()) m.clip_qkv = positive_field(cfg, k.clip_qkv, file, 0.f);
  }
  if (k.embedding_multiplier != nullptr)
    m.embedding_multiplier = positive_field(cfg, key(k.embedding_multiplier), file, k.absent.embedding_multiplier);
  if (k.residual_multiplier != nullptr)
    m.residual_multiplier = positive_field(cfg, key(k.residual_multiplier), file, k.absent.residual_multiplier);
  if (k.logits_scaling != nullptr)
    m.logits_scaling = positive_field(cfg, key(k.logits_scaling), file, k.absent.logits_scaling);
  if (k.attention_multiplier != nullptr)
    m.attention_multiplier = positive_field(cfg, key(k.attention_multiplier), file, k.absent.attention_multiplier);
  m.bos_token_id = token_id_field(cfg, "bos_token_id", c.vocab_size, file);
  m.eos_token_id = token_id_field(cfg, "eos_token_id", c.vocab_size, file);
  ck.tied_embeddings = bool_field(cfg, "tie_word_embeddings", file, false);

  for (const auto& [name, value] : cfg.items()) {
    if (read.count(name) != 0 || name.empty() || name[0] == '_') continue;
    bool inert = false;
    for (const char* const* p = k.inert_keys; p != nullptr && *p != nullptr; ++p) inert = inert || name == *p;
    if (!inert) refuse_option(file, k, name, value, "is not known to moe_convert");
  }

  // moe_train's llama-family models carry a char tokenizer; a Hugging Face model its
  // tokenizer.json (BPE), stored in the .moe file; without one, a model takes token ids.
  const auto tok_path = ck.dir / "tokenizer.json";
  if (std::filesystem::exists(tok_path)) {
    const json tok = read_json_file(tok_path);
    if (tok.is_object() && tok.value("type", "") == "char") {
      ck.chars = read_char_tokenizer(tok_path);
      if (static_cast<int>(ck.chars.size()) != c.vocab_size)
        throw InputError("'" + tok_path.string() + "' has " + std::to_string(ck.chars.size()) +
                         " characters, config.json says vocab_size " + std::to_string(c.vocab_size));
    } else {
      auto bpe = std::make_shared<BpeTokenizerTables>(read_hf_tokenizer(ck.dir, c.vocab_size));
      for (const std::string& note : bpe->notes) ck.notes.push_back(note);
      ck.bpe = std::move(bpe);
    }
  } else {
    ck.notes.push_back("no tokenizer.json: the model takes token ids (moe_infer --ids)");
  }
}

void open_makemoe(Checkpoint& ck, const json& cfg, const std::filesystem::path& file) {
  const CheckpointLayout& k = makemoe_layout();
  ModelConfig& c = ck.config;
  ModelConstants& m = ck.constants;
  c.family = k.family;
  c.d_model = int_field(cfg, k.d_model, file);
  c.n_layers = int_field(cfg, k.n_layers, file);
  c.n_heads = int_field(cfg, k.n_heads, file);
  c.n_kv_heads = c.n_heads;
  if (c.d_model % c.n_heads != 0)
    throw InputError("'" + file.string() + "': " + k.d_model + " " + std::to_string(c.d_model) +
                     " is not divisible by " + k.n_heads + " " + std::to_string(c.n_heads));
  c.head_dim = c.d_model / c.n_heads;
  c.n_experts = int_field(cfg, k.n_experts, file);
  c.top_k = int_field(cfg, k.top_k, file);
  c.expert_hidden = int_field(cfg, k.expert_hidden, file, k.expert_hidden_per_d_model * c.d_model);
  c.vocab_size = int_field(cfg, k.vocab_size, file);
  c.max_context = int_field(cfg, k.max_context, file);
  m.norm_eps = norm_eps_field(cfg, k.norm_eps, file, k.absent.norm_eps);
  const std::string scale = cfg.value(k.attention_scale, std::string(attention_scale_name(k.absent.attention_scale)));
  if (!parse_attention_scale(scale.c_str(), m.attention_scale))
    throw InputError("'" + file.string() + "': " + k.attention_scale + " '" + scale + "' is not one of " +
                     attention_scale_name(AttentionScaleRule::inv_sqrt_model_dim) + ", " +
                     attention_scale_name(AttentionScaleRule::inv_sqrt_head_dim));
  m.rope_theta = k.absent.rope_theta;  // no RoPE in the classic family
  // makeMoE's SparseMoE applies an expert capacity in every forward pass, eval included,
  // with capacity_factor = 1.0 unless the model was built with another value.
  if (!cfg.contains(k.capacity_factor)) {
    m.capacity_factor = k.absent.capacity_factor;
    ck.notes.push_back(
        "config.json gives no capacity_factor: using makeMoE's default 1.0 (expert capacity int(T*k/E) per window)");
  } else if (cfg[k.capacity_factor].is_null()) {
    m.capacity_factor = 0.;
  } else if (cfg[k.capacity_factor].is_number() && cfg[k.capacity_factor].get<double>() >= 0. &&
             std::isfinite(cfg[k.capacity_factor].get<double>())) {
    m.capacity_factor = cfg[k.capacity_factor].get<double>();
  } else {
    throw InputError("'" + file.string() + "': capacity_factor must be a number >= 0 or null, found " +
                     cfg[k.capacity_factor].dump());
  }

  const auto tok_path = ck.dir / "tokenizer.json";
  if (std::filesystem::exists(tok_path)) {
    ck.chars = read_char_tokenizer(tok_path);
    if (static_cast<int>(ck.chars.size()) != c.vocab_size)
      throw InputError("'" + tok_path.string() + "' has " + std::to_string(ck.chars.size()) +
                       " characters, config.json says vocab_size " + std::to_string(c.vocab_size));
  } else {
    ck.notes.push_back("no tokenizer.json: the model takes token ids (moe_infer --ids)");
  }
}

}  // namespace

void Checkpoint::check_sources(const TensorSpec& spec, const std::vector<TensorSource>& sources) const {
  for (const TensorSource& src : sources) {
    if (!store->has(src.name)) {
      char what[96];
      describe_tensor(spec.role, spec.layer, spec.expert, what, sizeof what);
      throw InputError("missing tensor '" + src.name + "' (" + what + ") in '" + dir.string() + "'");
    }
    const SafetensorInfo& info = store->info(src.name);
    if (info.shape != src.shape) {
      std::string w = "[";
      for (size_t i = 0; i < src.shape.size(); ++i) w += (i ? ", " : "") + std::to_string(src.shape[i]);
      throw InputError("tensor '" + src.name + "' has shape " + info.shape_text() + ", expected " + w +
                       "] from config.json (" + ConfigKey(config).c_str() + ")");
    }
  }
}

std::vector<float> Checkpoint::load(const TensorSpec& spec) const {
  const std::vector<TensorSource> parts = sources(spec);
  check_sources(spec, parts);
  std::vector<float> out;
  for (const TensorSource& src : parts) {
    const std::string& name = src.name;
    std::vector<float> v = store->read_f32(name, src.offset, src.count);
    for (size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v[i])) {
        const int64_t at = src.offset + static_cast<int64_t>(i);
        const int64_t cols = src.shape.size() > 1 ? src.shape.back() : 1;
        throw InputError("tensor '" + name + "' has a " + (std::isnan(v[i]) ? "NaN" : "infinite value") +
                         " at element " + std::to_string(at) +
                         (src.shape.size() > 1
                              ? " (row " + std::to_string(at / cols) + ", column " + std::to_string(at % cols) + ")"
                              : std::string()));
      }
    }
    if (parts.size() == 1) return v;  // no copy: the largest tensors are hundreds of MB
    if (out.empty()) out.reserve(static_cast<size_t>(spec.elements()));
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

std::vector<std::string> Checkpoint::unused_tensors() const {
  std::set<std::string> used;
  for_each_tensor_spec(config, [&](const TensorSpec& s) {
    for (auto& n : source_names(s)) used.insert(n);
  });
  std::vector<std::string> out;
  for (const auto& n : store->names())
    if (!used.count(n)) out.push_back(n);
  return out;
}

Checkpoint open_checkpoint(const std::filesystem::path& dir, int max_context, double capacity_factor) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw InputError("'" + dir.string() + "' is not a checkpoint directory");
  const auto config_path = dir / "config.json";
  if (!std::filesystem::exists(config_path)) throw InputError("no config.json in '" + dir.string() + "'");
  const json cfg = read_json_file(config_path);
  if (!cfg.is_object()) throw InputError("'" + config_path.string() + "' is not a JSON object");
  Checkpoint ck;
  ck.dir = dir;
  // The field readers check the values they use; a field of another JSON type than
  // expected (e.g. "hidden_act": 3) surfaces here as nlohmann's type_error.
  try {
    const std::string type = cfg.value("model_type", std::string());
    ck.layout = layout_for_model_type(type);
    if (ck.layout == &makemoe_layout()) open_makemoe(ck, cfg, config_path);
    else if (ck.layout != nullptr) open_hugging_face(ck, cfg, config_path, *ck.layout);
    else
      throw InputError("unsupported architecture: model_type '" + type + "' in '" + config_path.string() +
                       "' (moe_convert reads " + supported_model_types() + ")");
  } catch (const json::exception& e) {
    throw InputError("'" + config_path.string() +
                     "' (or its tokenizer.json) has a field of the wrong type: " + e.what());
  }
  if (max_context > 0) {
    if (ck.config.family == Family::classic && max_context != ck.config.max_context)
      throw InputError("--max-context cannot change a makeMoE model's context: its position table has block_size = " +
                       std::to_string(ck.config.max_context) + " rows");
    // RoPE computes any position: like transformers, which runs past max_position_embeddings,
    // a longer context is allowed, with a warning.
    if (max_context > ck.config.max_context)
      ck.notes.push_back("warning: --max-context " + std::to_string(max_context) + " is above the " +
                         std::to_string(ck.config.max_context) +
                         " positions the model was trained for (max_position_embeddings); past them its output is "
                         "not what it was trained to give");
    ck.config.max_context = max_context;
  }
  if (capacity_factor >= 0.) ck.constants.capacity_factor = capacity_factor;
  if (const char* why = config_problem(ck.config))
    throw InputError("'" + config_path.string() + "' describes an unsupported model (" + ConfigKey(ck.config).c_str() +
                     "): " + why);
  ck.store = std::make_unique<TensorStore>(dir);
  if (is_hugging_face(*ck.layout) && !ck.tied_embeddings && !ck.store->has("lm_head.weight")) {
    ck.tied_embeddings = true;
    ck.notes.push_back("no lm_head.weight: the output head is the embedding table (as tie_word_embeddings)");
  }
  return ck;
}

}  // namespace moe::converter
