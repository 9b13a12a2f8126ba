#include "converter/checkpoint_writer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "converter/atomic_file.hpp"
#include "converter/input_error.hpp"
#include "platform/mapped_file.hpp"

namespace moe::converter {

using nlohmann::json;

json checkpoint_config_json(const ModelConfig& m, const ModelConstants& k, const RecipeRecord& recipe) {
  const CheckpointLayout& l = layout_for(m.family);
  json j = {{"model_type", l.model_type}};
  const std::pair<const char*, int> dims[] = {{l.d_model, m.d_model},       {l.n_layers, m.n_layers},
                                              {l.n_heads, m.n_heads},       {l.n_kv_heads, m.n_kv_heads},
                                              {l.head_dim, m.head_dim},     {l.n_experts, m.n_experts},
                                              {l.top_k, m.top_k},           {l.expert_hidden, m.expert_hidden},
                                              {l.vocab_size, m.vocab_size}, {l.max_context, m.max_context}};
  for (const auto& [key, value] : dims)
    if (key != nullptr) j[key] = value;
  j[l.norm_eps] = k.norm_eps;
  if (l.rope_theta != nullptr) {
    j[l.rope_theta] = k.rope_theta;
    j["rope_parameters"] = {{l.rope_theta, k.rope_theta}, {"rope_type", "default"}};
  }
  if (l.attention_scale != nullptr) j[l.attention_scale] = attention_scale_name(k.attention_scale);
  if (l.capacity_factor != nullptr)
    j[l.capacity_factor] = k.capacity_factor > 0 ? json(k.capacity_factor) : json(nullptr);
  const auto token = [](int32_t id) { return id >= 0 ? json(id) : json(nullptr); };
  if (&l == &makemoe_layout()) {
    j["dropout"] = recipe.dropout;
  } else {  // what transformers' MixtralConfig needs to load it
    j.update({{"architectures", {"MixtralForCausalLM"}},
              {"hidden_act", "silu"},
              {"tie_word_embeddings", false},
              {"attention_dropout", 0.0},
              {"router_aux_loss_coef", recipe.router_aux_loss_coef},
              {"router_jitter_noise", 0.0},
              {"output_router_logits", false},
              {"sliding_window", nullptr},
              {"initializer_range", 0.02},
              {"use_cache", true},
              {"bos_token_id", token(k.bos_token_id)},
              {"eos_token_id", token(k.eos_token_id)},
              {"pad_token_id", nullptr},
              {"torch_dtype", "float32"}});
  }
  return j;
}

void append_checkpoint_tensor(const ModelConfig& config, const TensorSpec& spec, const float* data,
                              std::vector<SafetensorOut>& out) {
  const std::vector<std::string> names = tensor_names(layout_for(config.family), config, spec);
  const int64_t parts = static_cast<int64_t>(names.size());
  const int64_t part_rows = spec.rows / parts;
  const int64_t cols = spec.is_matrix() ? spec.cols : 1;
  for (int64_t i = 0; i < parts; ++i) {
    const std::vector<int64_t> shape =
        spec.is_matrix() ? std::vector<int64_t>{part_rows, spec.cols} : std::vector<int64_t>{part_rows};
    out.push_back(f32_tensor(names[static_cast<size_t>(i)], shape, data + i * part_rows * cols));
  }
}

void write_checkpoint(const std::filesystem::path& dir, const ModelConfig& config, const ModelConstants& constants,
                      std::vector<SafetensorOut> tensors, const std::vector<uint32_t>& chars, const json& extra,
                      const RecipeRecord& recipe) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw InputError("cannot create '" + dir.string() + "': " + ec.message());
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  write_safetensors(dir / "model.safetensors", tensors);
  json cfg = checkpoint_config_json(config, constants, recipe);
  cfg.update(extra);
  write_file_atomically(dir / "config.json", cfg.dump(2) + "\n");
  if (!chars.empty())
    write_file_atomically(dir / "tokenizer.json", json{{"type", "char"}, {"chars", chars_utf8(chars)}}.dump() + "\n");
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
  float uniform_pm1() {
    return static_cast<float>(static_cast<double>(next() >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  }  // [-1, 1)
};
}  // namespace

void write_random_checkpoint(const std::filesystem::path& dir, const ModelConfig& config, uint64_t seed,
                             const std::vector<uint32_t>& chars) {
  if (!chars.empty() && static_cast<int>(chars.size()) != config.vocab_size)
    throw InputError("random checkpoint: " + std::to_string(chars.size()) + " characters for vocab_size " +
                     std::to_string(config.vocab_size));
  // Every tensor is held as f32, then the file is encoded whole: about twice its size.
  const double need = 2.0 * static_cast<double>(total_params(config)) * sizeof(float);
  const double have = physical_memory_bytes();
  if (need > have) {
    char text[512];
    std::snprintf(text, sizeof text,
                  "a random checkpoint of %s has %.3g parameters: writing it needs about %.2f GB of memory, "
                  "and this machine has %.2f GB",
                  ConfigKey(config).c_str(), static_cast<double>(total_params(config)), need / 1e9, have / 1e9);
    throw InputError(text);
  }
  SplitMix64 rng{seed};
  std::vector<SafetensorOut> tensors;
  std::vector<float> values;
  for_each_tensor_spec(config, [&](const TensorSpec& s) {
    values.resize(static_cast<size_t>(s.elements()));
    const bool norm_weight =
        s.role == TensorRole::attn_norm || s.role == TensorRole::ffn_norm || s.role == TensorRole::final_norm;
    // Uniform on [-a, a] has variance a^2/3: a = sqrt(3/cols) gives variance 1/cols.
    const float a = s.is_matrix() ? std::sqrt(3.f / static_cast<float>(s.cols)) : 0.02f;
    for (float& v : values) v = norm_weight ? 1.f : a * rng.uniform_pm1();
    append_checkpoint_tensor(config, s, values.data(), tensors);
  });
  // The default constants, and RoPE's base as a Mixtral config without rope_theta has it.
  ModelConstants constants;
  if (config.family == Family::llama) constants.rope_theta = hf_mixtral_layout().absent.rope_theta;
  write_checkpoint(dir, config, constants, std::move(tensors), chars,
                   json{{"moe_random_checkpoint", {{"seed", seed}}}});
}

}  // namespace moe::converter
