#include "converter/checkpoint_writer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "converter/atomic_file.hpp"
#include "converter/input_error.hpp"
#include "platform/mapped_file.hpp"

namespace moe::converter {

using nlohmann::json;

json checkpoint_config_json(const ModelConfig& m, const ModelConstants& k, const RecipeRecord& recipe) {
  return checkpoint_config_json(layout_for(m.family), m, k, recipe);
}

json checkpoint_config_json(const CheckpointLayout& l, const ModelConfig& m, const ModelConstants& k,
                            const RecipeRecord& recipe) {
  if (const char* why = layout_problem(l, m))
    throw InputError(std::string("cannot write ") + ConfigKey(m).c_str() + " as a " + l.model_type +
                     " checkpoint: " + why);
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
    return j;
  }
  // What transformers' config class needs to load it.
  j.update({{"architectures", {l.architecture}},
            {"hidden_act", "silu"},
            {"tie_word_embeddings", false},
            {"attention_dropout", 0.0},
            {"router_aux_loss_coef", recipe.router_aux_loss_coef},
            {"output_router_logits", false},
            {"initializer_range", 0.02},
            {"use_cache", true},
            {"bos_token_id", token(k.bos_token_id)},
            {"eos_token_id", token(k.eos_token_id)},
            {"pad_token_id", nullptr},
            {"torch_dtype", "float32"}});
  if (&l == &hf_mixtral_layout()) {
    j.update({{"router_jitter_noise", 0.0}, {"sliding_window", nullptr}});
    return j;
  }
  if (l.qkv_bias != nullptr) j[l.qkv_bias] = m.qkv_bias;
  if (l.shared_expert_hidden != nullptr) j[l.shared_expert_hidden] = m.shared_expert_hidden;
  if (l.dense_hidden != nullptr) {
    j[l.dense_hidden] = m.dense_layers != 0 ? m.dense_hidden : m.expert_hidden;
    json dense = json::array();
    for (int layer = 0; layer < m.n_layers; ++layer)
      if (m.is_dense_layer(layer)) dense.push_back(layer);
    j["mlp_only_layers"] = dense;
    j["decoder_sparse_step"] = 1;
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
  }
  if (l.normalize_top_k != nullptr) j[l.normalize_top_k] = k.router_weights == RouterWeights::topk_softmax;
  if (l.clip_qkv != nullptr) j[l.clip_qkv] = k.clip_qkv > 0 ? json(k.clip_qkv) : json(nullptr);
  if (l.embedding_multiplier != nullptr) j[l.embedding_multiplier] = k.embedding_multiplier;
  if (l.residual_multiplier != nullptr) j[l.residual_multiplier] = k.residual_multiplier;
  if (l.logits_scaling != nullptr) j[l.logits_scaling] = k.logits_scaling;
  if (l.attention_multiplier != nullptr)
    j[l.attention_multiplier] = k.attention_scale == AttentionScaleRule::multiplier
                                    ? k.attention_multiplier
                                    : attention_factor(m, k);  // the same scale, as a multiplier
  if (l.qk_norm == QkNorm::per_head || l.qk_norm == QkNorm::whole) j["attention_bias"] = false;
  return j;
}

void append_checkpoint_tensor(const ModelConfig& config, const TensorSpec& spec, const float* data,
                              std::vector<SafetensorOut>& out) {
  // The layout's parts, in row order (whole tensors here: the writer's layouts have no
  // stacked experts).
  for (const TensorSource& src : tensor_sources(layout_for(config.family), config, spec)) {
    out.push_back(f32_tensor(src.name, src.shape, data));
    data += src.count;
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
                             const std::vector<uint32_t>& chars, const RandomCheckpointOptions& options) {
  if (!chars.empty() && static_cast<int>(chars.size()) != config.vocab_size)
    throw InputError("random checkpoint: " + std::to_string(chars.size()) + " characters for vocab_size " +
                     std::to_string(config.vocab_size));
  const CheckpointLayout& layout = options.layout != nullptr ? *options.layout : layout_for(config.family);
  if (const char* why = layout_problem(layout, config))
    throw InputError(std::string("random checkpoint: ") + ConfigKey(config).c_str() + " cannot be a " +
                     layout.model_type + " checkpoint: " + why);
  const int esize = safetensors_dtype_size(options.dtype);
  if (esize == 0 || options.dtype == "I8" || options.dtype == "U8" || options.dtype == "BOOL")
    throw InputError("random checkpoint: dtype '" + options.dtype + "' is not one of F32, F16, BF16");
  // The constants: the layout's defaults (Mixtral's RoPE base 1e6; makeMoE's file keeps
  // the engine's defaults, without expert capacity, as it always has).
  const ModelConstants constants = &layout == &makemoe_layout() ? ModelConstants{} : layout.absent;

  // Refused before any work when the file system has no room (a key is 200 bytes; its
  // checkpoint can be petabytes).
  const double need = static_cast<double>(total_params(config)) * esize;
  std::error_code space_ec;
  const std::filesystem::path parent = dir.has_parent_path() ? dir.parent_path() : std::filesystem::path(".");
  const auto space = std::filesystem::space(std::filesystem::exists(dir) ? dir : parent, space_ec);
  if (!space_ec && need > static_cast<double>(space.available)) {
    char text[512];
    std::snprintf(text, sizeof text,
                  "a random checkpoint of %s has %.3g parameters: it would take %.2f GB of disk, and '%s' has %.2f "
                  "GB free",
                  ConfigKey(config).c_str(), static_cast<double>(total_params(config)), need / 1e9,
                  parent.string().c_str(), static_cast<double>(space.available) / 1e9);
    throw InputError(text);
  }
  // One tensor is held as f32 at a time.
  long largest = 0;
  for_each_tensor_spec(config, [&](const TensorSpec& s) { largest = std::max(largest, s.elements()); });
  if (static_cast<double>(largest) * 6 > physical_memory_bytes())
    throw InputError("random checkpoint: a tensor of " + std::string(ConfigKey(config).c_str()) +
                     " has more elements than this machine's memory holds");
  // Plan: every checkpoint tensor (a Granite expert tensor holds all experts' parts),
  // sorted by name, in shards of at most shard_bytes (one file when 0 or when it fits).
  std::map<std::string, std::vector<int64_t>> shapes;
  for_each_tensor_spec(config, [&](const TensorSpec& s) {
    for (const TensorSource& src : tensor_sources(layout, config, s)) shapes[src.name] = src.shape;
  });
  struct Placed {
    int shard = 0;
    uint64_t offset = 0;  // in the shard's data
  };
  std::map<std::string, Placed> placed;
  std::vector<std::vector<SafetensorEntry>> shards(1);
  uint64_t shard_bytes = 0, total = 0;
  for (const auto& [name, shape] : shapes) {
    uint64_t bytes = static_cast<uint64_t>(esize);
    for (int64_t d : shape) bytes *= static_cast<uint64_t>(d);
    if (options.shard_bytes > 0 && shard_bytes > 0 && shard_bytes + bytes > options.shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    placed[name] = {static_cast<int>(shards.size()) - 1, shard_bytes};
    shards.back().push_back({name, options.dtype, shape, bytes});
    shard_bytes += bytes;
    total += bytes;
  }
  const int n = static_cast<int>(shards.size());
  const auto shard_name = [&](int i) {
    if (n == 1) return std::string("model.safetensors");
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i + 1, n);
    return std::string(buf);
  };
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw InputError("cannot create '" + dir.string() + "': " + ec.message());
  std::vector<std::unique_ptr<AtomicFile>> files;
  std::vector<uint64_t> data_start;
  for (int i = 0; i < n; ++i) {
    files.push_back(std::make_unique<AtomicFile>(dir / shard_name(i)));
    const std::vector<uint8_t> header = encode_safetensors_header(shards[static_cast<size_t>(i)]);
    files.back()->write(header.data(), header.size());
    data_start.push_back(header.size());
  }

  // Values in the spec order (so a key and seed give the same numbers in any layout),
  // one tensor in memory at a time, each part written where the plan put it.
  SplitMix64 rng{seed};
  std::vector<float> values;
  std::vector<uint8_t> bytes;
  for_each_tensor_spec(config, [&](const TensorSpec& s) {
    values.resize(static_cast<size_t>(s.elements()));
    const bool norm_weight = s.role == TensorRole::attn_norm || s.role == TensorRole::ffn_norm ||
                             s.role == TensorRole::final_norm || s.role == TensorRole::q_norm ||
                             s.role == TensorRole::k_norm;
    // Uniform on [-a, a] has variance a^2/3: a = sqrt(3/cols) gives variance 1/cols.
    const float a = s.is_matrix() ? std::sqrt(3.f / static_cast<float>(s.cols)) : 0.02f;
    for (float& v : values) v = norm_weight ? 1.f : a * rng.uniform_pm1();
    size_t at = 0;
    for (const TensorSource& src : tensor_sources(layout, config, s)) {
      bytes.clear();
      append_as_dtype(values.data() + at, static_cast<size_t>(src.count), options.dtype, bytes);
      const Placed& p = placed.at(src.name);
      files[static_cast<size_t>(p.shard)]->write_at(
          data_start[static_cast<size_t>(p.shard)] + p.offset + static_cast<uint64_t>(src.offset) * esize, bytes.data(),
          bytes.size());
      at += static_cast<size_t>(src.count);
    }
  });
  for (auto& f : files) f->commit();
  if (n > 1) {
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", json::object()}};
    for (const auto& [name, p] : placed) index["weight_map"][name] = shard_name(p.shard);
    write_file_atomically(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  json cfg = checkpoint_config_json(layout, config, constants);
  cfg["torch_dtype"] = options.dtype == "BF16" ? "bfloat16" : options.dtype == "F16" ? "float16" : "float32";
  if (&layout == &makemoe_layout()) cfg.erase("torch_dtype");
  cfg.update(json{{"moe_random_checkpoint", {{"seed", seed}}}});
  write_file_atomically(dir / "config.json", cfg.dump(2) + "\n");
  if (!chars.empty())
    write_file_atomically(dir / "tokenizer.json", json{{"type", "char"}, {"chars", chars_utf8(chars)}}.dump() + "\n");
}

}  // namespace moe::converter
