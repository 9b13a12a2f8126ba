#include "converter/checkpoint.hpp"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "converter/checkpoint_writer.hpp"
#include "converter/convert_error.hpp"
#include "moe/tokenizer.hpp"

namespace moe::convert {

using nlohmann::json;

namespace {

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw ConvertError("cannot open '" + path.string() + "'");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw ConvertError("'" + path.string() + "' is not valid JSON: " + e.what());
  }
}

// A positive integer field of config.json; `fallback` < 0 means required.
int int_field(const json& cfg, const char* key, const std::filesystem::path& file, int fallback = -1) {
  if (!cfg.contains(key) || cfg[key].is_null()) {
    if (fallback >= 0) return fallback;
    throw ConvertError("'" + file.string() + "' has no '" + key + "'");
  }
  const json& v = cfg[key];
  if (!v.is_number_integer() || v.get<long long>() <= 0 || v.get<long long>() > (1ll << 30))
    throw ConvertError("'" + file.string() + "': '" + key + "' must be a positive integer, found " + v.dump());
  return static_cast<int>(v.get<long long>());
}

float float_field(const json& cfg, const char* key, const std::filesystem::path& file, float fallback) {
  if (!cfg.contains(key) || cfg[key].is_null()) return fallback;
  if (!cfg[key].is_number()) throw ConvertError("'" + file.string() + "': '" + key + "' must be a number, found " + cfg[key].dump());
  return cfg[key].get<float>();
}

int token_id_field(const json& cfg, const char* key) {
  if (!cfg.contains(key) || !cfg[key].is_number_integer()) return -1;  // null or a list: none we use
  return static_cast<int>(cfg[key].get<long long>());
}

std::vector<uint32_t> read_char_tokenizer(const std::filesystem::path& path) {
  const json tok = read_json(path);
  if (!tok.is_object() || tok.value("type", "") != "char" || !tok.contains("chars") || !tok["chars"].is_string())
    throw ConvertError("'" + path.string() + "' is not a char tokenizer ({\"type\": \"char\", \"chars\": \"...\"})");
  const std::vector<uint32_t> out = chars_from_utf8(tok["chars"].get<std::string>(), "'" + path.string() + "': chars");
  std::set<uint32_t> unique(out.begin(), out.end());
  if (unique.size() != out.size()) throw ConvertError("'" + path.string() + "': chars lists a character twice");
  return out;
}

void open_mixtral(Checkpoint& ck, const json& cfg, const std::filesystem::path& file) {
  ck.format = "hf-mixtral";
  ModelConfig& c = ck.config;
  c.family = Family::llama;
  c.d_model = int_field(cfg, "hidden_size", file);
  c.n_layers = int_field(cfg, "num_hidden_layers", file);
  c.n_heads = int_field(cfg, "num_attention_heads", file);
  c.n_kv_heads = int_field(cfg, "num_key_value_heads", file, c.n_heads);
  if (c.d_model % c.n_heads != 0 && !(cfg.contains("head_dim") && cfg["head_dim"].is_number_integer()))
    throw ConvertError("'" + file.string() + "': hidden_size " + std::to_string(c.d_model) + " is not divisible by num_attention_heads " +
                       std::to_string(c.n_heads) + " and head_dim is not given");
  c.head_dim = int_field(cfg, "head_dim", file, c.d_model / c.n_heads);
  c.n_experts = int_field(cfg, "num_local_experts", file);
  c.top_k = int_field(cfg, "num_experts_per_tok", file);
  c.expert_hidden = int_field(cfg, "intermediate_size", file);
  c.vocab_size = int_field(cfg, "vocab_size", file);
  c.max_context = int_field(cfg, "max_position_embeddings", file);
  ck.norm_eps = float_field(cfg, "rms_norm_eps", file, 1e-5f);

  // rope_theta: transformers 5 nests it in rope_parameters; older configs keep it on top.
  const json* rope = nullptr;
  if (cfg.contains("rope_parameters") && cfg["rope_parameters"].is_object()) rope = &cfg["rope_parameters"];
  else if (cfg.contains("rope_scaling") && cfg["rope_scaling"].is_object()) rope = &cfg["rope_scaling"];
  if (rope != nullptr) {
    const std::string type = rope->value("rope_type", rope->value("type", std::string("default")));
    if (type != "default")
      throw ConvertError("'" + file.string() + "': rope type '" + type + "' is not supported (only the default RoPE)");
  }
  if (rope != nullptr && rope->contains("rope_theta")) ck.rope_theta = float_field(*rope, "rope_theta", file, 0.f);
  else if (cfg.contains("rope_theta")) ck.rope_theta = float_field(cfg, "rope_theta", file, 0.f);
  else {
    ck.rope_theta = 1e6f;
    ck.notes.push_back("config.json gives no rope_theta: using MixtralConfig's default 1e6");
  }
  if (!(ck.rope_theta > 1.f) || !std::isfinite(ck.rope_theta))
    throw ConvertError("'" + file.string() + "': rope_theta must be a finite number > 1");

  const std::string act = cfg.value("hidden_act", std::string("silu"));
  if (act != "silu") throw ConvertError("'" + file.string() + "': hidden_act '" + act + "' is not supported (Mixtral experts use silu)");
  if (cfg.contains("sliding_window") && cfg["sliding_window"].is_number_integer() &&
      cfg["sliding_window"].get<long long>() < c.max_context)
    throw ConvertError("'" + file.string() + "': sliding_window " + cfg["sliding_window"].dump() +
                       " is smaller than the context; sliding-window attention is not supported (pass --max-context " +
                       cfg["sliding_window"].dump() + " to stay inside the window)");
  if (cfg.value("attention_bias", false)) throw ConvertError("'" + file.string() + "': attention_bias is not supported");
  ck.attention_scale = AttentionScaleRule::inv_sqrt_head_dim;
  ck.bos_token_id = token_id_field(cfg, "bos_token_id");
  ck.eos_token_id = token_id_field(cfg, "eos_token_id");
  if (ck.bos_token_id >= c.vocab_size) ck.bos_token_id = -1;
  if (ck.eos_token_id >= c.vocab_size) ck.eos_token_id = -1;

  // moe_train's llama-family models carry a char tokenizer; a Hugging Face tokenizer
  // (BPE, SentencePiece) is not read: such a model takes token ids.
  const auto tok_path = ck.dir / "tokenizer.json";
  if (std::filesystem::exists(tok_path)) {
    const json tok = read_json(tok_path);
    if (tok.is_object() && tok.value("type", "") == "char") {
      ck.chars = read_char_tokenizer(tok_path);
      if (static_cast<int>(ck.chars.size()) != c.vocab_size)
        throw ConvertError("'" + tok_path.string() + "' has " + std::to_string(ck.chars.size()) +
                           " characters, config.json says vocab_size " + std::to_string(c.vocab_size));
    } else {
      ck.notes.push_back("tokenizer.json is not a char tokenizer and is not read: the model takes token ids (moe_infer --ids)");
    }
  }
}

void open_makemoe(Checkpoint& ck, const json& cfg, const std::filesystem::path& file) {
  ck.format = "makemoe";
  ModelConfig& c = ck.config;
  c.family = Family::classic;
  c.d_model = int_field(cfg, "n_embed", file);
  c.n_layers = int_field(cfg, "n_layer", file);
  c.n_heads = int_field(cfg, "n_head", file);
  c.n_kv_heads = c.n_heads;
  if (c.d_model % c.n_heads != 0)
    throw ConvertError("'" + file.string() + "': n_embed " + std::to_string(c.d_model) + " is not divisible by n_head " +
                       std::to_string(c.n_heads));
  c.head_dim = c.d_model / c.n_heads;
  c.n_experts = int_field(cfg, "num_experts", file);
  c.top_k = int_field(cfg, "top_k", file);
  c.expert_hidden = int_field(cfg, "expert_hidden", file, 4 * c.d_model);
  c.vocab_size = int_field(cfg, "vocab_size", file);
  c.max_context = int_field(cfg, "block_size", file);
  ck.norm_eps = float_field(cfg, "layer_norm_eps", file, 1e-5f);
  const std::string scale = cfg.value("attention_scale", std::string("n_embed**-0.5"));
  if (scale == "n_embed**-0.5") ck.attention_scale = AttentionScaleRule::inv_sqrt_model_dim;
  else if (scale == "head_size**-0.5") ck.attention_scale = AttentionScaleRule::inv_sqrt_head_dim;
  else throw ConvertError("'" + file.string() + "': attention_scale '" + scale + "' is not one of n_embed**-0.5, head_size**-0.5");
  ck.rope_theta = 0.f;  // no RoPE in the classic family
  // makeMoE's SparseMoE applies an expert capacity in every forward pass, eval included,
  // with capacity_factor = 1.0 unless the model was built with another value.
  if (!cfg.contains("capacity_factor")) {
    ck.capacity_factor = 1.0;
    ck.notes.push_back("config.json gives no capacity_factor: using makeMoE's default 1.0 (expert capacity int(T*k/E) per window)");
  } else if (cfg["capacity_factor"].is_null()) {
    ck.capacity_factor = 0.;
  } else if (cfg["capacity_factor"].is_number() && cfg["capacity_factor"].get<double>() >= 0.) {
    ck.capacity_factor = cfg["capacity_factor"].get<double>();
  } else {
    throw ConvertError("'" + file.string() + "': capacity_factor must be a number >= 0 or null, found " + cfg["capacity_factor"].dump());
  }

  const auto tok_path = ck.dir / "tokenizer.json";
  if (std::filesystem::exists(tok_path)) {
    ck.chars = read_char_tokenizer(tok_path);
    if (static_cast<int>(ck.chars.size()) != c.vocab_size)
      throw ConvertError("'" + tok_path.string() + "' has " + std::to_string(ck.chars.size()) + " characters, config.json says vocab_size " +
                         std::to_string(c.vocab_size));
  } else {
    ck.notes.push_back("no tokenizer.json: the model takes token ids (moe_infer --ids)");
  }
}

std::string layer_prefix_mixtral(int l) { return "model.layers." + std::to_string(l) + "."; }
std::string layer_prefix_makemoe(int l) { return "blocks." + std::to_string(l) + "."; }

}  // namespace

std::vector<std::string> checkpoint_tensor_names(const std::string& format, const ModelConfig& config, const TensorSpec& s, bool tied) {
  const std::string e = std::to_string(s.expert);
  if (format == "hf-mixtral") {
    const std::string p = layer_prefix_mixtral(s.layer);
    const std::string ex = p + "block_sparse_moe.experts." + e + ".";
    switch (s.role) {
      case TensorRole::token_embedding: return {"model.embed_tokens.weight"};
      case TensorRole::attn_norm: return {p + "input_layernorm.weight"};
      case TensorRole::wq: return {p + "self_attn.q_proj.weight"};
      case TensorRole::wk: return {p + "self_attn.k_proj.weight"};
      case TensorRole::wv: return {p + "self_attn.v_proj.weight"};
      case TensorRole::wo: return {p + "self_attn.o_proj.weight"};
      case TensorRole::ffn_norm: return {p + "post_attention_layernorm.weight"};
      case TensorRole::router: return {p + "block_sparse_moe.gate.weight"};
      case TensorRole::expert_w1: return {ex + "w1.weight"};
      case TensorRole::expert_w2: return {ex + "w2.weight"};
      case TensorRole::expert_w3: return {ex + "w3.weight"};
      case TensorRole::final_norm: return {"model.norm.weight"};
      case TensorRole::lm_head:
        // Tied embeddings: the output head is the embedding table.
        return {tied ? "model.embed_tokens.weight" : "lm_head.weight"};
      default: break;
    }
  } else {
    const std::string p = layer_prefix_makemoe(s.layer);
    const std::string ex = p + "smoe.experts." + e + ".net.";
    auto per_head = [&](const char* which) {
      std::vector<std::string> names;
      for (int h = 0; h < config.n_heads; ++h) names.push_back(p + "sa.heads." + std::to_string(h) + "." + which + ".weight");
      return names;
    };
    switch (s.role) {
      case TensorRole::token_embedding: return {"token_embedding_table.weight"};
      case TensorRole::position_embedding: return {"position_embedding_table.weight"};
      case TensorRole::attn_norm: return {p + "ln1.weight"};
      case TensorRole::attn_norm_bias: return {p + "ln1.bias"};
      case TensorRole::wq: return per_head("query");
      case TensorRole::wk: return per_head("key");
      case TensorRole::wv: return per_head("value");
      case TensorRole::wo: return {p + "sa.proj.weight"};
      case TensorRole::wo_bias: return {p + "sa.proj.bias"};
      case TensorRole::ffn_norm: return {p + "ln2.weight"};
      case TensorRole::ffn_norm_bias: return {p + "ln2.bias"};
      case TensorRole::router: return {p + "smoe.router.topkroute_linear.weight"};
      case TensorRole::router_bias: return {p + "smoe.router.topkroute_linear.bias"};
      case TensorRole::expert_w1: return {ex + "0.weight"};
      case TensorRole::expert_b1: return {ex + "0.bias"};
      case TensorRole::expert_w2: return {ex + "2.weight"};
      case TensorRole::expert_b2: return {ex + "2.bias"};
      case TensorRole::final_norm: return {"ln_f.weight"};
      case TensorRole::final_norm_bias: return {"ln_f.bias"};
      case TensorRole::lm_head: return {"lm_head.weight"};
      case TensorRole::lm_head_bias: return {"lm_head.bias"};
      default: break;
    }
  }
  throw ConvertError(std::string("internal: no source name for role ") + role_name(s.role));
}

std::vector<float> Checkpoint::load(const TensorSpec& spec) const {
  const std::vector<std::string> names = source_names(spec);
  const int parts = static_cast<int>(names.size());
  const int64_t part_rows = spec.rows / parts;
  std::vector<float> out;
  out.reserve(static_cast<size_t>(spec.elements()));
  for (const std::string& name : names) {
    if (!store->has(name)) {
      char what[96];
      describe_tensor(spec.role, spec.layer, spec.expert, what, sizeof what);
      throw ConvertError("missing tensor '" + name + "' (" + what + ") in '" + dir.string() + "'");
    }
    const SafetensorInfo& info = store->info(name);
    const std::vector<int64_t> want = spec.is_matrix() ? std::vector<int64_t>{part_rows, spec.cols} : std::vector<int64_t>{part_rows};
    if (info.shape != want) {
      std::string w = "[";
      for (size_t i = 0; i < want.size(); ++i) w += (i ? ", " : "") + std::to_string(want[i]);
      throw ConvertError("tensor '" + name + "' has shape " + info.shape_text() + ", expected " + w + "] from config.json (" +
                         ConfigKey(config).c_str() + ")");
    }
    std::vector<float> v = store->read_f32(name);
    for (size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v[i])) {
        const int64_t cols = spec.is_matrix() ? spec.cols : 1;
        throw ConvertError("tensor '" + name + "' has a " + (std::isnan(v[i]) ? "NaN" : "infinite value") + " at element " +
                           std::to_string(i) + (spec.is_matrix() ? " (row " + std::to_string(static_cast<int64_t>(i) / cols) + ", column " +
                                                                       std::to_string(static_cast<int64_t>(i) % cols) + ")"
                                                                 : std::string()));
      }
    }
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
  if (!std::filesystem::is_directory(dir, ec)) throw ConvertError("'" + dir.string() + "' is not a checkpoint directory");
  const auto config_path = dir / "config.json";
  if (!std::filesystem::exists(config_path)) throw ConvertError("no config.json in '" + dir.string() + "'");
  const json cfg = read_json(config_path);
  if (!cfg.is_object()) throw ConvertError("'" + config_path.string() + "' is not a JSON object");
  Checkpoint ck;
  ck.dir = dir;
  // The field readers check the values they use; a field of another JSON type than
  // expected (e.g. "hidden_act": 3) surfaces here as nlohmann's type_error.
  try {
    const std::string type = cfg.value("model_type", std::string());
    if (type == "mixtral") open_mixtral(ck, cfg, config_path);
    else if (type == "makemoe") open_makemoe(ck, cfg, config_path);
    else
      throw ConvertError("unsupported architecture: model_type '" + type + "' in '" + config_path.string() +
                         "' (moe_convert reads 'mixtral' and 'makemoe')");
  } catch (const json::exception& e) {
    throw ConvertError("'" + config_path.string() + "' (or its tokenizer.json) has a field of the wrong type: " + e.what());
  }
  if (max_context > 0) {
    if (max_context > ck.config.max_context)
      throw ConvertError("--max-context " + std::to_string(max_context) + " exceeds the model's context of " +
                         std::to_string(ck.config.max_context));
    if (ck.config.family == Family::classic && max_context != ck.config.max_context)
      throw ConvertError("--max-context cannot change a makeMoE model's context: its position table has block_size = " +
                         std::to_string(ck.config.max_context) + " rows");
    ck.config.max_context = max_context;
  }
  if (capacity_factor >= 0.) ck.capacity_factor = capacity_factor;
  if (const char* why = config_problem(ck.config))
    throw ConvertError("'" + config_path.string() + "' describes an unsupported model (" + ConfigKey(ck.config).c_str() + "): " + why);
  ck.store = std::make_unique<TensorStore>(dir);
  ck.tied_embeddings = ck.format == "hf-mixtral" && !ck.store->has("lm_head.weight");
  return ck;
}

}  // namespace moe::convert
