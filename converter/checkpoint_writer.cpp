#include "converter/checkpoint_writer.hpp"

#include <algorithm>
#include <cmath>

#include "converter/atomic_file.hpp"
#include "converter/checkpoint.hpp"
#include "converter/convert_error.hpp"
#include "moe/tokenizer.hpp"

namespace moe::convert {

using nlohmann::json;

std::string chars_utf8(const std::vector<uint32_t>& chars) {
  std::string s;
  for (uint32_t cp : chars) {
    char buf[4];
    s.append(buf, static_cast<size_t>(utf8_encode(cp, buf)));
  }
  return s;
}

std::vector<uint32_t> chars_from_utf8(const std::string& text, const std::string& what) {
  std::vector<uint32_t> out;
  for (size_t at = 0; at < text.size();) {
    uint32_t cp = 0;
    const int n = utf8_decode(text.data() + at, text.size() - at, cp);
    if (n == 0) throw ConvertError(what + " is not valid UTF-8");
    out.push_back(cp);
    at += static_cast<size_t>(n);
  }
  return out;
}

const char* checkpoint_format_for(const ModelConfig& config) {
  return config.family == Family::classic ? "makemoe" : "hf-mixtral";
}

json checkpoint_config_json(const ModelConfig& m, const CheckpointHyper& h) {
  if (m.family == Family::classic)
    return {{"model_type", "makemoe"}, {"vocab_size", m.vocab_size}, {"n_embed", m.d_model}, {"n_head", m.n_heads},
            {"n_layer", m.n_layers}, {"block_size", m.max_context}, {"num_experts", m.n_experts}, {"top_k", m.top_k},
            {"expert_hidden", m.expert_hidden}, {"dropout", h.dropout},
            {"attention_scale", h.attention_scale == AttentionScaleRule::inv_sqrt_model_dim ? "n_embed**-0.5" : "head_size**-0.5"},
            {"layer_norm_eps", h.norm_eps}, {"capacity_factor", h.capacity_factor > 0 ? json(h.capacity_factor) : json(nullptr)}};
  return {{"architectures", {"MixtralForCausalLM"}}, {"model_type", "mixtral"}, {"hidden_size", m.d_model},
          {"intermediate_size", m.expert_hidden}, {"num_hidden_layers", m.n_layers}, {"num_attention_heads", m.n_heads},
          {"num_key_value_heads", m.n_kv_heads}, {"head_dim", m.head_dim}, {"num_local_experts", m.n_experts},
          {"num_experts_per_tok", m.top_k}, {"vocab_size", m.vocab_size}, {"max_position_embeddings", m.max_context},
          {"rms_norm_eps", h.norm_eps}, {"rope_theta", h.rope_theta},
          {"rope_parameters", {{"rope_theta", h.rope_theta}, {"rope_type", "default"}}}, {"hidden_act", "silu"},
          {"tie_word_embeddings", false}, {"attention_dropout", 0.0}, {"router_aux_loss_coef", h.aux_coef},
          {"router_jitter_noise", 0.0}, {"output_router_logits", false}, {"sliding_window", nullptr},
          {"initializer_range", 0.02}, {"use_cache", true}, {"bos_token_id", nullptr}, {"eos_token_id", nullptr},
          {"pad_token_id", nullptr}, {"torch_dtype", "float32"}};
}

void append_checkpoint_tensor(const ModelConfig& config, const TensorSpec& spec, const float* data, std::vector<SafetensorOut>& out) {
  const std::vector<std::string> names = checkpoint_tensor_names(checkpoint_format_for(config), config, spec);
  const int64_t parts = static_cast<int64_t>(names.size());
  const int64_t part_rows = spec.rows / parts;
  const int64_t cols = spec.is_matrix() ? spec.cols : 1;
  for (int64_t i = 0; i < parts; ++i) {
    const std::vector<int64_t> shape = spec.is_matrix() ? std::vector<int64_t>{part_rows, spec.cols} : std::vector<int64_t>{part_rows};
    out.push_back(f32_tensor(names[static_cast<size_t>(i)], shape, data + i * part_rows * cols));
  }
}

void write_checkpoint(const std::filesystem::path& dir, const ModelConfig& config, const CheckpointHyper& hyper,
                      std::vector<SafetensorOut> tensors, const std::vector<uint32_t>& chars, const json& extra) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw ConvertError("cannot create '" + dir.string() + "': " + ec.message());
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  write_safetensors(dir / "model.safetensors", tensors);
  json cfg = checkpoint_config_json(config, hyper);
  cfg.update(extra);
  write_file_atomically(dir / "config.json", cfg.dump(2) + "\n");
  if (!chars.empty()) write_file_atomically(dir / "tokenizer.json", json{{"type", "char"}, {"chars", chars_utf8(chars)}}.dump() + "\n");
}

namespace {
// splitmix64: a fixed, portable stream for the random weights.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform_pm1() { return static_cast<float>(static_cast<double>(next() >> 11) * 0x1.0p-53 * 2.0 - 1.0); }  // [-1, 1)
};
}  // namespace

void write_random_checkpoint(const std::filesystem::path& dir, const ModelConfig& config, uint64_t seed, const std::vector<uint32_t>& chars) {
  if (!chars.empty() && static_cast<int>(chars.size()) != config.vocab_size)
    throw ConvertError("random checkpoint: " + std::to_string(chars.size()) + " characters for vocab_size " + std::to_string(config.vocab_size));
  SplitMix64 rng{seed};
  std::vector<SafetensorOut> tensors;
  std::vector<float> values;
  for_each_tensor_spec(config, [&](const TensorSpec& s) {
    values.resize(static_cast<size_t>(s.elements()));
    const bool norm_weight = s.role == TensorRole::attn_norm || s.role == TensorRole::ffn_norm || s.role == TensorRole::final_norm;
    // Uniform on [-a, a] has variance a^2/3: a = sqrt(3/cols) gives variance 1/cols.
    const float a = s.is_matrix() ? std::sqrt(3.f / static_cast<float>(s.cols)) : 0.02f;
    for (float& v : values) v = norm_weight ? 1.f : a * rng.uniform_pm1();
    append_checkpoint_tensor(config, s, values.data(), tensors);
  });
  CheckpointHyper hyper;
  hyper.capacity_factor = 0.;  // random weights: no makeMoE capacity rule
  write_checkpoint(dir, config, hyper, std::move(tensors), chars, json{{"moe_random_checkpoint", {{"seed", seed}}}});
}

}  // namespace moe::convert
