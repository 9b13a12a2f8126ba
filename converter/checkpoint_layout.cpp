#include "converter/checkpoint_layout.hpp"

#include "converter/input_error.hpp"
#include "moe/tokenizer.hpp"

namespace moe::converter {

namespace {
// Keys as the reference implementations spell them (nullptr: the layout has none);
// absent: the constants their code uses when config.json leaves a key out.
// clang-format off
constexpr CheckpointLayout kHfMixtral{
    .name = "hf-mixtral", .model_type = "mixtral", .family = Family::llama,
    .d_model = "hidden_size", .n_layers = "num_hidden_layers", .n_heads = "num_attention_heads",
    .n_kv_heads = "num_key_value_heads", .head_dim = "head_dim", .n_experts = "num_local_experts",
    .top_k = "num_experts_per_tok", .expert_hidden = "intermediate_size", .vocab_size = "vocab_size",
    .max_context = "max_position_embeddings",
    // rope_theta: transformers 5 nests it in rope_parameters, older configs keep it on top.
    // No attention-scale key (always 1/sqrt(head_dim)), no expert capacity at inference.
    .norm_eps = "rms_norm_eps", .rope_theta = "rope_theta", .attention_scale = nullptr, .capacity_factor = nullptr,
    .absent = {.rope_theta = 1e6f},  // MixtralConfig's default
    .expert_hidden_per_d_model = 0};

constexpr CheckpointLayout kMakemoe{
    .name = "makemoe", .model_type = "makemoe", .family = Family::classic,
    // Multi-head attention: n_kv_heads = n_heads, head_dim = d_model / n_heads.
    .d_model = "n_embed", .n_layers = "n_layer", .n_heads = "n_head", .n_kv_heads = nullptr, .head_dim = nullptr,
    .n_experts = "num_experts", .top_k = "top_k", .expert_hidden = "expert_hidden", .vocab_size = "vocab_size",
    .max_context = "block_size", .norm_eps = "layer_norm_eps", .rope_theta = nullptr /* learned positions */,
    .attention_scale = "attention_scale", .capacity_factor = "capacity_factor",
    // makeMoE's Head scales by C**-0.5 (C = n_embed); its SparseMoE applies capacity 1.0
    // in every forward pass; no RoPE.
    .absent = {.rope_theta = 0.f, .attention_scale = AttentionScaleRule::inv_sqrt_model_dim, .capacity_factor = 1.0},
    .expert_hidden_per_d_model = 4};
// clang-format on
}  // namespace

const CheckpointLayout& hf_mixtral_layout() { return kHfMixtral; }
const CheckpointLayout& makemoe_layout() { return kMakemoe; }

const CheckpointLayout& layout_for(Family family) {
  return family == Family::classic ? makemoe_layout() : hf_mixtral_layout();
}

const CheckpointLayout* layout_for_model_type(const std::string& model_type) {
  for (const CheckpointLayout* l : {&hf_mixtral_layout(), &makemoe_layout()})
    if (model_type == l->model_type) return l;
  return nullptr;
}

const char* supported_model_types() { return "'mixtral' and 'makemoe'"; }

std::vector<std::string> tensor_names(const CheckpointLayout& layout, const ModelConfig& config, const TensorSpec& s,
                                      bool tied) {
  const std::string e = std::to_string(s.expert);
  if (&layout == &hf_mixtral_layout()) {
    const std::string p = "model.layers." + std::to_string(s.layer) + ".";
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
    const std::string p = "blocks." + std::to_string(s.layer) + ".";
    const std::string ex = p + "smoe.experts." + e + ".net.";
    auto per_head = [&](const char* which) {
      std::vector<std::string> names;
      for (int h = 0; h < config.n_heads; ++h)
        names.push_back(p + "sa.heads." + std::to_string(h) + "." + which + ".weight");
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
  throw InputError(std::string("internal: no source name for role ") + role_name(s.role));
}

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
    if (n == 0) throw InputError(what + " is not valid UTF-8");
    out.push_back(cp);
    at += static_cast<size_t>(n);
  }
  return out;
}

}  // namespace moe::converter
