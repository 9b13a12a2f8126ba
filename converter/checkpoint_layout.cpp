#include "converter/checkpoint_layout.hpp"

#include "converter/input_error.hpp"
#include "moe/tokenizer.hpp"

namespace moe::converter {

namespace {
// Keys every Hugging Face config.json may carry that do not change inference: training
// settings, generation defaults and metadata PretrainedConfig writes.
constexpr const char* kHfInertKeys[] = {
    "architectures", "transformers_version", "dtype", "torch_dtype", "initializer_range", "attention_dropout",
    "hidden_dropout", "router_aux_loss_coef", "output_router_logits", "use_cache", "pad_token_id", "return_dict",
    "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss", "pruned_heads",
    "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "cross_attention_hidden_size", "add_cross_attention",
    "tie_encoder_decoder", "finetuning_task", "id2label", "label2id", "tokenizer_class", "prefix", "sep_token_id",
    "decoder_start_token_id", "task_specific_params", "problem_type", "max_length", "min_length", "do_sample",
    "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "use_return_dict",
    // moe_train's, moe_merge's and moe_random_checkpoint's provenance records
    "moe_train", "moe_merge",
    // Mixtral's training-time router noise
    "router_jitter_noise", "moe_random_checkpoint", nullptr};

// The keys every Hugging Face family spells alike (transformers' PretrainedConfig
// names); each layout below gives the rest. rope_theta: transformers 5 nests it in
// rope_parameters, older configs keep it on top (the reader looks in both). No
// attention-scale key (the rule is the family's), no expert capacity at inference.
constexpr CheckpointLayout hugging_face(CheckpointLayout l) {
  l.family = Family::llama;
  l.d_model = "hidden_size";
  l.n_layers = "num_hidden_layers";
  l.n_heads = "num_attention_heads";
  l.n_kv_heads = "num_key_value_heads";
  l.top_k = "num_experts_per_tok";
  l.vocab_size = "vocab_size";
  l.max_context = "max_position_embeddings";
  l.norm_eps = "rms_norm_eps";
  l.rope_theta = "rope_theta";
  l.inert_keys = kHfInertKeys;
  return l;
}

// What differs: keys as the reference implementations spell them (nullptr: the layout
// has none); absent: the constants their config class uses when config.json leaves a
// key out.
// clang-format off
constexpr CheckpointLayout kHfMixtral = hugging_face({
    .name = "hf-mixtral", .model_type = "mixtral", .architecture = "MixtralForCausalLM",
    .head_dim = "head_dim", .n_experts = "num_local_experts", .expert_hidden = "intermediate_size",
    .absent = {.rope_theta = 1e6f},  // MixtralConfig's default
    .experts = ExpertStorage::mixtral, .router = "block_sparse_moe.gate.weight"});

// Qwen1.5-MoE / Qwen2-MoE (Qwen2MoeConfig): q/k/v biases, a gated shared expert, dense
// layers; norm_topk_prob false by default.
constexpr CheckpointLayout kHfQwen2Moe = hugging_face({
    .name = "hf-qwen2-moe", .model_type = "qwen2_moe", .architecture = "Qwen2MoeForCausalLM",
    .head_dim = "head_dim", .n_experts = "num_experts", .expert_hidden = "moe_intermediate_size",
    .absent = {.norm_eps = 1e-6f, .rope_theta = 1e4f, .router_weights = RouterWeights::full_softmax},
    .experts = ExpertStorage::qwen, .router = "mlp.gate.weight",
    .qkv_bias = "qkv_bias", .absent_qkv_bias = true,  // older configs have no key: the biases are always there
    .shared_expert_hidden = "shared_expert_intermediate_size", .dense_hidden = "intermediate_size",
    .normalize_top_k = "norm_topk_prob"});

// Qwen3-MoE (Qwen3MoeConfig): per-head q/k norm, explicit head_dim, dense layers.
constexpr CheckpointLayout kHfQwen3Moe = hugging_face({
    .name = "hf-qwen3-moe", .model_type = "qwen3_moe", .architecture = "Qwen3MoeForCausalLM",
    .head_dim = "head_dim", .n_experts = "num_experts", .expert_hidden = "moe_intermediate_size",
    .absent = {.norm_eps = 1e-6f, .rope_theta = 1e4f, .router_weights = RouterWeights::full_softmax},
    .experts = ExpertStorage::qwen, .router = "mlp.gate.weight", .qk_norm = QkNorm::per_head,
    .dense_hidden = "intermediate_size", .normalize_top_k = "norm_topk_prob"});

// OLMoE (OlmoeConfig): q/k norm over the whole projections, clip_qkv, every layer MoE.
constexpr CheckpointLayout kHfOlmoe = hugging_face({
    .name = "hf-olmoe", .model_type = "olmoe", .architecture = "OlmoeForCausalLM",
    .head_dim = "head_dim", .n_experts = "num_experts", .expert_hidden = "intermediate_size",
    .absent = {.norm_eps = 1e-5f, .rope_theta = 1e4f, .router_weights = RouterWeights::full_softmax},
    .experts = ExpertStorage::qwen, .router = "mlp.gate.weight", .qk_norm = QkNorm::whole,
    .normalize_top_k = "norm_topk_prob", .clip_qkv = "clip_qkv"});

// Granite-MoE (GraniteMoeConfig): four multipliers, merged experts, head_dim = d / heads
// (a head_dim key is not read, as transformers does not).
constexpr CheckpointLayout kHfGranite = hugging_face({
    .name = "hf-granitemoe", .model_type = "granitemoe", .architecture = "GraniteMoeForCausalLM",
    .head_dim = nullptr, .n_experts = "num_local_experts", .expert_hidden = "intermediate_size",
    .absent = {.norm_eps = 1e-6f, .rope_theta = 1e4f, .attention_scale = AttentionScaleRule::multiplier,
               .attention_multiplier = 1.f},
    .experts = ExpertStorage::granite, .router = "block_sparse_moe.router.layer.weight",
    .embedding_multiplier = "embedding_multiplier", .residual_multiplier = "residual_multiplier",
    .logits_scaling = "logits_scaling", .attention_multiplier = "attention_multiplier"});

constexpr CheckpointLayout kMakemoe{
    .name = "makemoe", .model_type = "makemoe", .architecture = "", .family = Family::classic,
    // Multi-head attention: n_kv_heads = n_heads, head_dim = d_model / n_heads.
    .d_model = "n_embed", .n_layers = "n_layer", .n_heads = "n_head", .n_kv_heads = nullptr, .head_dim = nullptr,
    .n_experts = "num_experts", .top_k = "top_k", .expert_hidden = "expert_hidden", .vocab_size = "vocab_size",
    .max_context = "block_size", .norm_eps = "layer_norm_eps", .rope_theta = nullptr /* learned positions */,
    .attention_scale = "attention_scale", .capacity_factor = "capacity_factor",
    // makeMoE's Head scales by C**-0.5 (C = n_embed); its SparseMoE applies capacity 1.0
    // in every forward pass; no RoPE.
    .absent = {.rope_theta = 0.f, .attention_scale = AttentionScaleRule::inv_sqrt_model_dim, .capacity_factor = 1.0},
    .expert_hidden_per_d_model = 4, .experts = ExpertStorage::makemoe};
// clang-format on

constexpr const CheckpointLayout* kLayouts[] = {&kHfMixtral, &kHfQwen2Moe, &kHfQwen3Moe,
                                                &kHfOlmoe,   &kHfGranite,  &kMakemoe};
}  // namespace

const CheckpointLayout& hf_mixtral_layout() { return kHfMixtral; }
const CheckpointLayout& makemoe_layout() { return kMakemoe; }
bool is_hugging_face(const CheckpointLayout& layout) { return &layout != &kMakemoe; }

const CheckpointLayout& layout_for(Family family) {
  return family == Family::classic ? makemoe_layout() : hf_mixtral_layout();
}

const char* layout_problem(const CheckpointLayout& l, const ModelConfig& c) {
  if (c.family != l.family) return "the layout is for the other family";
  if (c.qk_norm != l.qk_norm)
    return l.qk_norm == QkNorm::none       ? "the layout has no q/k norm"
           : l.qk_norm == QkNorm::per_head ? "the layout's q/k norm is per head (-qkh)"
                                           : "the layout's q/k norm is over the whole projection (-qkw)";
  if (c.qkv_bias && l.qkv_bias == nullptr) return "the layout has no q/k/v biases";
  if (c.has_shared_expert() && l.shared_expert_hidden == nullptr) return "the layout has no shared expert";
  if (c.dense_layers != 0 && l.dense_hidden == nullptr) return "the layout has no dense layers";
  return nullptr;
}

const CheckpointLayout* layout_for_model_type(const std::string& model_type) {
  for (const CheckpointLayout* l : kLayouts)
    if (model_type == l->model_type) return l;
  return nullptr;
}

std::string supported_model_types() {
  std::string s;
  constexpr size_t n = sizeof kLayouts / sizeof kLayouts[0];
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) s += i + 1 == n ? " and " : ", ";
    s.append("'").append(kLayouts[i]->model_type).append("'");
  }
  return s;
}

std::vector<TensorSource> tensor_sources(const CheckpointLayout& layout, const ModelConfig& config, const TensorSpec& s,
                                         bool tied) {
  const int64_t rows = s.rows, cols = s.cols;
  const auto whole = [&](std::string name) {
    TensorSource src{std::move(name), s.is_matrix() ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows}, 0,
                     s.elements()};
    return std::vector<TensorSource>{std::move(src)};
  };
  const std::string e = std::to_string(s.expert);
  if (&layout == &kMakemoe) {
    const std::string p = "blocks." + std::to_string(s.layer) + ".";
    const std::string ex = p + "smoe.experts." + e + ".net.";
    auto per_head = [&](const char* which) {
      std::vector<TensorSource> parts;
      const int64_t head_rows = rows / config.n_heads;
      for (int h = 0; h < config.n_heads; ++h)
        parts.push_back(
            {p + "sa.heads." + std::to_string(h) + "." + which + ".weight", {head_rows, cols}, 0, head_rows * cols});
      return parts;
    };
    switch (s.role) {
      case TensorRole::token_embedding: return whole("token_embedding_table.weight");
      case TensorRole::position_embedding: return whole("position_embedding_table.weight");
      case TensorRole::attn_norm: return whole(p + "ln1.weight");
      case TensorRole::attn_norm_bias: return whole(p + "ln1.bias");
      case TensorRole::wq: return per_head("query");
      case TensorRole::wk: return per_head("key");
      case TensorRole::wv: return per_head("value");
      case TensorRole::wo: return whole(p + "sa.proj.weight");
      case TensorRole::wo_bias: return whole(p + "sa.proj.bias");
      case TensorRole::ffn_norm: return whole(p + "ln2.weight");
      case TensorRole::ffn_norm_bias: return whole(p + "ln2.bias");
      case TensorRole::router: return whole(p + "smoe.router.topkroute_linear.weight");
      case TensorRole::router_bias: return whole(p + "smoe.router.topkroute_linear.bias");
      case TensorRole::expert_w1: return whole(ex + "0.weight");
      case TensorRole::expert_b1: return whole(ex + "0.bias");
      case TensorRole::expert_w2: return whole(ex + "2.weight");
      case TensorRole::expert_b2: return whole(ex + "2.bias");
      case TensorRole::final_norm: return whole("ln_f.weight");
      case TensorRole::final_norm_bias: return whole("ln_f.bias");
      case TensorRole::lm_head: return whole("lm_head.weight");
      case TensorRole::lm_head_bias: return whole("lm_head.bias");
      default: break;
    }
    throw InputError(std::string("internal: no makeMoE name for role ") + role_name(s.role));
  }

  // The Hugging Face layouts: one naming scheme but for the router and the experts.
  const std::string p = "model.layers." + std::to_string(s.layer) + ".";
  const auto expert = [&](const char* mixtral, const char* qwen, bool granite_up) -> std::vector<TensorSource> {
    switch (layout.experts) {
      case ExpertStorage::mixtral: return whole(p + "block_sparse_moe.experts." + e + "." + mixtral + ".weight");
      case ExpertStorage::qwen: return whole(p + "mlp.experts." + e + "." + qwen + ".weight");
      default: break;
    }
    // Granite: expert e's [2I, d] slice of input_linear (gate rows, then up), or its
    // [d, I] slice of output_linear.
    const int64_t E = config.n_experts, I = config.expert_hidden, d = config.d_model;
    if (s.role == TensorRole::expert_w2)
      return {{p + "block_sparse_moe.output_linear.weight", {E, d, I}, s.expert * d * I, d * I}};
    return {{p + "block_sparse_moe.input_linear.weight",
             {E, 2 * I, d},
             (s.expert * 2 + (granite_up ? 1 : 0)) * I * d,
             I * d}};
  };
  switch (s.role) {
    case TensorRole::token_embedding: return whole("model.embed_tokens.weight");
    case TensorRole::attn_norm: return whole(p + "input_layernorm.weight");
    case TensorRole::wq: return whole(p + "self_attn.q_proj.weight");
    case TensorRole::wk: return whole(p + "self_attn.k_proj.weight");
    case TensorRole::wv: return whole(p + "self_attn.v_proj.weight");
    case TensorRole::wo: return whole(p + "self_attn.o_proj.weight");
    case TensorRole::wq_bias: return whole(p + "self_attn.q_proj.bias");
    case TensorRole::wk_bias: return whole(p + "self_attn.k_proj.bias");
    case TensorRole::wv_bias: return whole(p + "self_attn.v_proj.bias");
    case TensorRole::q_norm: return whole(p + "self_attn.q_norm.weight");
    case TensorRole::k_norm: return whole(p + "self_attn.k_norm.weight");
    case TensorRole::ffn_norm: return whole(p + "post_attention_layernorm.weight");
    case TensorRole::router: return whole(p + layout.router);
    case TensorRole::expert_w1: return expert("w1", "gate_proj", false);
    case TensorRole::expert_w3: return expert("w3", "up_proj", true);
    case TensorRole::expert_w2: return expert("w2", "down_proj", false);
    case TensorRole::dense_w1: return whole(p + "mlp.gate_proj.weight");
    case TensorRole::dense_w3: return whole(p + "mlp.up_proj.weight");
    case TensorRole::dense_w2: return whole(p + "mlp.down_proj.weight");
    case TensorRole::shared_w1: return whole(p + "mlp.shared_expert.gate_proj.weight");
    case TensorRole::shared_w3: return whole(p + "mlp.shared_expert.up_proj.weight");
    case TensorRole::shared_w2: return whole(p + "mlp.shared_expert.down_proj.weight");
    case TensorRole::shared_gate: return whole(p + "mlp.shared_expert_gate.weight");
    case TensorRole::final_norm: return whole("model.norm.weight");
    // Tied embeddings: the output head is the embedding table.
    case TensorRole::lm_head: return whole(tied ? "model.embed_tokens.weight" : "lm_head.weight");
    default: break;
  }
  throw InputError(std::string("internal: no ") + layout.name + " name for role " + role_name(s.role));
}

std::vector<std::string> tensor_names(const CheckpointLayout& layout, const ModelConfig& config, const TensorSpec& s,
                                      bool tied) {
  std::vector<std::string> names;
  for (const TensorSource& src : tensor_sources(layout, config, s, tied)) names.push_back(src.name);
  return names;
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
