#include "converter/checkpoint_layout.hpp"

#include "converter/input_error.hpp"
#include "moe/tokenizer.hpp"

namespace moe::converter {

const CheckpointLayout& hf_mixtral_layout() {
  static const CheckpointLayout layout = [] {
    CheckpointLayout l{};
    l.name = "hf-mixtral";
    l.model_type = "mixtral";
    l.family = Family::llama;
    l.d_model = "hidden_size";
    l.n_layers = "num_hidden_layers";
    l.n_heads = "num_attention_heads";
    l.n_kv_heads = "num_key_value_heads";
    l.head_dim = "head_dim";
    l.n_experts = "num_local_experts";
    l.top_k = "num_experts_per_tok";
    l.expert_hidden = "intermediate_size";
    l.vocab_size = "vocab_size";
    l.max_context = "max_position_embeddings";
    l.norm_eps = "rms_norm_eps";
    l.rope_theta = "rope_theta";  // transformers 5 nests it in rope_parameters; older configs keep it on top
    l.attention_scale = nullptr;  // always 1/sqrt(head_dim)
    l.capacity_factor = nullptr;  // no expert capacity at inference
    l.absent.rope_theta = 1e6f;   // MixtralConfig's default
    l.expert_hidden_per_d_model = 0;
    return l;
  }();
  return layout;
}

const CheckpointLayout& makemoe_layout() {
  static const CheckpointLayout layout = [] {
    CheckpointLayout l{};
    l.name = "makemoe";
    l.model_type = "makemoe";
    l.family = Family::classic;
    l.d_model = "n_embed";
    l.n_layers = "n_layer";
    l.n_heads = "n_head";
    l.n_kv_heads = nullptr;  // multi-head attention: n_heads
    l.head_dim = nullptr;    // d_model / n_heads
    l.n_experts = "num_experts";
    l.top_k = "top_k";
    l.expert_hidden = "expert_hidden";
    l.vocab_size = "vocab_size";
    l.max_context = "block_size";
    l.norm_eps = "layer_norm_eps";
    l.rope_theta = nullptr;  // learned positions
    l.attention_scale = "attention_scale";
    l.capacity_factor = "capacity_factor";
    l.absent.rope_theta = 0.f;                                          // no RoPE
    l.absent.attention_scale = AttentionScaleRule::inv_sqrt_model_dim;  // makeMoE's Head: C**-0.5
    l.absent.capacity_factor = 1.0;  // makeMoE's SparseMoE applies capacity 1.0 in every forward pass
    l.expert_hidden_per_d_model = 4;
    return l;
  }();
  return layout;
}

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
