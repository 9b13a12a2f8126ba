// The model's shape, declared once. The engine is a template over a ModelConfig value,
// so every buffer it owns has a size known at compile time.
//
// A config has a canonical text form, its key:
//   llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128
//   family-d<d_model>-l<layers>-h<heads>-kv<kv heads>-hd<head dim>-e<experts>-k<top k>
//         -f<expert hidden>-v<vocab>-c<max context>
// then, only where a model has them, in this order (a Mixtral key has none):
//   -qkh | -qkw     RMSNorm on q and k: per head over head_dim (Qwen3) | over the whole
//                   projection (OLMoE)
//   -qkvb           biases on q, k and v (Qwen2-MoE)
//   -s<width>       a shared expert of that hidden width, gated by sigmoid(x . g) (Qwen2-MoE)
//   -fd<width>-dl<mask>  dense SwiGLU MLP layers of that width instead of MoE, in the layers
//                   whose bits are set in the hexadecimal mask (Qwen-MoE mlp_only_layers)
// Keys name configs in the CMake option MOE_CONFIGS, in moe_convert's report and in
// every mismatch message, so a user can copy one from an error straight into a build.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "moe/format.hpp"

namespace moe {

// The engine's two decoder structures. Every Hugging Face family (Mixtral, Qwen-MoE,
// OLMoE, Granite-MoE) is `llama` (RMSNorm, RoPE, GQA, SwiGLU experts) plus the optional
// parts below; which checkpoint layout a model came from is not the engine's concern.
enum class Family : uint8_t { classic = 0, llama = 1 };

// Where q and k are RMS-normalised before RoPE. Values match moe.fb.QkNorm.
enum class QkNorm : uint8_t { none = 0, per_head = 1, whole = 2 };

constexpr const char* family_name(Family f) { return f == Family::classic ? "classic" : "llama"; }

struct ModelConfig {
  Family family = Family::llama;
  int d_model = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int n_experts = 0;
  int top_k = 0;
  int expert_hidden = 0;
  int vocab_size = 0;
  int max_context = 0;
  // Optional parts (llama family); their defaults are Mixtral's structure.
  QkNorm qk_norm = QkNorm::none;
  bool qkv_bias = false;
  int shared_expert_hidden = 0;  // 0: no shared expert
  int dense_hidden = 0;          // width of the dense MLP layers; 0: none
  uint64_t dense_layers = 0;     // bit l: layer l is a dense MLP, not MoE (layers < 64)

  constexpr int q_dim() const { return n_heads * head_dim; }
  constexpr int kv_dim() const { return n_kv_heads * head_dim; }
  constexpr bool has_biases() const { return family == Family::classic; }
  constexpr bool has_position_table() const { return family == Family::classic; }
  constexpr bool gated_experts() const { return family == Family::llama; }
  constexpr bool is_dense_layer(int l) const { return l < 64 && ((dense_layers >> l) & 1u) != 0; }
  constexpr bool has_shared_expert() const { return shared_expert_hidden > 0; }
  // Any optional part: files using them need format version 2.
  constexpr bool has_optional_parts() const {
    return qk_norm != QkNorm::none || qkv_bias || shared_expert_hidden > 0 || dense_layers != 0;
  }
  // The widest FFN hidden layer: expert, shared expert or dense MLP.
  constexpr int max_ffn_hidden() const {
    int w = expert_hidden;
    if (shared_expert_hidden > w) w = shared_expert_hidden;
    if (dense_layers != 0 && dense_hidden > w) w = dense_hidden;
    return w;
  }

  constexpr bool operator==(const ModelConfig&) const = default;
};

// How attention scores are scaled before the softmax. Values match moe.fb.AttentionScale.
enum class AttentionScaleRule : uint8_t {
  inv_sqrt_head_dim = 0,   // 1/sqrt(head_dim): every Hugging Face family
  inv_sqrt_model_dim = 1,  // 1/sqrt(d_model): makeMoE's Head (C**-0.5 with C = n_embed)
  multiplier = 2,          // ModelConstants::attention_multiplier (Granite)
};

// The rule as makeMoE's config.json and moe_train's training record spell it.
constexpr const char* attention_scale_name(AttentionScaleRule r) {
  return r == AttentionScaleRule::inv_sqrt_model_dim ? "n_embed**-0.5"
         : r == AttentionScaleRule::multiplier       ? "attention_multiplier"
                                                     : "head_size**-0.5";
}
constexpr bool parse_attention_scale(const char* text, AttentionScaleRule& out) {
  constexpr AttentionScaleRule rules[] = {AttentionScaleRule::inv_sqrt_head_dim,
                                          AttentionScaleRule::inv_sqrt_model_dim};  // multiplier: a number, not a name
  for (AttentionScaleRule r : rules) {
    const char* a = attention_scale_name(r);
    const char* b = text;
    while (*a != '\0' && *a == *b) ++a, ++b;
    if (*a == '\0' && *b == '\0') {
      out = r;
      return true;
    }
  }
  return false;
}

// How a token's top-k experts are weighted. Values match moe.fb.RouterWeights.
enum class RouterWeights : uint8_t {
  topk_softmax = 0,  // softmax over the k chosen logits (= full softmax renormalised over
                     // the k: Mixtral, Granite, Qwen with norm_topk_prob)
  full_softmax = 1,  // the k chosen experts' full-softmax probabilities, not renormalised
                     // (OLMoE, Qwen without norm_topk_prob)
};

// The constants a model carries besides its dimensions: what the .moe file stores,
// what the converter reads from config.json, what the trainer trains with and what the
// checkpoint writer records. Declared once, with one set of defaults; a checkpoint
// layout that defaults otherwise for an absent key says so in its description
// (converter/checkpoint_layout.hpp), and a training preset that differs sets its value.
struct ModelConstants {
  float norm_eps = 1e-5f;      // LayerNorm / RMSNorm epsilon
  float rope_theta = 10000.f;  // RoPE base (llama family; unused by classic)
  AttentionScaleRule attention_scale = AttentionScaleRule::inv_sqrt_head_dim;
  float attention_multiplier = 0.f;  // the factor itself, for AttentionScaleRule::multiplier
  double capacity_factor = 0.;       // > 0: makeMoE expert capacity (schema/moe_model.fbs); 0: none
  int32_t bos_token_id = -1;         // -1: none
  int32_t eos_token_id = -1;         // -1: none
  RouterWeights router_weights = RouterWeights::topk_softmax;
  float clip_qkv = 0.f;              // > 0: q, k, v clamped to [-clip, clip] before RoPE (OLMoE); 0: none
  float embedding_multiplier = 1.f;  // the embedding row is scaled by it (Granite)
  float residual_multiplier = 1.f;   // each sub-block's output is scaled by it before the residual add (Granite)
  float logits_scaling = 1.f;        // logits are divided by it (Granite)

  // Any constant only the Hugging Face families beyond Mixtral use: files holding one
  // need format version 2; the trainer does not train with them.
  constexpr bool has_family_constants() const {
    const ModelConstants mixtral{};
    return attention_scale == AttentionScaleRule::multiplier || router_weights != mixtral.router_weights ||
           clip_qkv != mixtral.clip_qkv || embedding_multiplier != mixtral.embedding_multiplier ||
           residual_multiplier != mixtral.residual_multiplier || logits_scaling != mixtral.logits_scaling;
  }

  constexpr bool operator==(const ModelConstants&) const = default;
};

// The factor attention scores are multiplied by, from the rule.
inline float attention_factor(const ModelConfig& c, const ModelConstants& k) {
  if (k.attention_scale == AttentionScaleRule::multiplier) return k.attention_multiplier;
  return 1.f / std::sqrt(static_cast<float>(k.attention_scale == AttentionScaleRule::inv_sqrt_model_dim ? c.d_model
                                                                                                        : c.head_dim));
}

// Why a config cannot be built, or nullptr when it can. Used by the engine's
// static_asserts (through is_valid) and by the file loader at run time.
constexpr const char* config_problem(const ModelConfig& c) {
  if (c.d_model <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.n_experts <= 0 ||
      c.top_k <= 0 || c.expert_hidden <= 0 || c.vocab_size <= 0 || c.max_context <= 0)
    return "every dimension must be positive";
  if (c.n_heads % c.n_kv_heads != 0) return "n_heads must be a multiple of n_kv_heads";
  if (c.top_k > c.n_experts) return "top_k must be at most n_experts";
  if (c.family == Family::classic && c.n_kv_heads != c.n_heads)
    return "the classic family uses multi-head attention: n_kv_heads must equal n_heads";
  if (c.family == Family::llama && c.head_dim % 2 != 0) return "RoPE needs an even head_dim";
  if (c.family == Family::classic && c.has_optional_parts())
    return "the classic family has none of the optional parts (q/k norm, q/k/v biases, shared expert, dense layers)";
  if (c.shared_expert_hidden < 0 || c.dense_hidden < 0) return "every dimension must be positive";
  if ((c.dense_layers != 0) != (c.dense_hidden > 0)) return "dense layers need a width, and a width needs dense layers";
  if (c.n_layers < 64 && (c.dense_layers >> c.n_layers) != 0) return "a dense layer is beyond the last layer";
  // Bounds keep every derived size (q_dim, rows x cols) far inside int and long.
  if (c.d_model > (1 << 20) || c.expert_hidden > (1 << 22) || c.shared_expert_hidden > (1 << 22) ||
      c.dense_hidden > (1 << 22) || c.vocab_size > (1 << 22) || c.max_context > (1 << 22) || c.n_layers > 4096 ||
      c.n_experts > 4096 || c.n_heads > 4096 || c.head_dim > (1 << 16) ||
      static_cast<long long>(c.n_heads) * c.head_dim > (1 << 22))
    return "a dimension is implausibly large";
  return nullptr;
}

namespace detail {
// Deliberately not constexpr: reaching it during constant evaluation stops the build
// with this function's name in the error.
inline void invalid_config_key_see_config_hpp_for_the_format() {}

constexpr bool parse_uint(const char*& p, int& out) {
  if (*p < '0' || *p > '9') return false;
  long long v = 0;
  while (*p >= '0' && *p <= '9') {
    v = v * 10 + (*p - '0');
    if (v > 0x7fffffff) return false;
    ++p;
  }
  out = static_cast<int>(v);
  return true;
}

constexpr bool parse_hex(const char*& p, uint64_t& out) {
  out = 0;
  int digits = 0;
  for (;; ++p, ++digits) {
    const char ch = *p;
    const int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
    if (v < 0) break;
    if (digits == 16) return false;
    out = out << 4 | static_cast<uint64_t>(v);
  }
  return digits > 0;
}

constexpr bool expect(const char*& p, const char* lit) {
  const char* q = p;
  while (*lit) {
    if (*q != *lit) return false;
    ++q, ++lit;
  }
  p = q;
  return true;
}
}  // namespace detail

// Parses a key; returns false (leaving `out` unspecified) when it is not one.
constexpr bool try_parse_config_key(const char* key, ModelConfig& out) {
  const char* p = key;
  if (detail::expect(p, "classic")) out.family = Family::classic;
  else if (detail::expect(p, "llama")) out.family = Family::llama;
  else return false;
  struct Field {
    const char* tag;
    int ModelConfig::*member;
  };
  constexpr Field fields[] = {{"-d", &ModelConfig::d_model},    {"-l", &ModelConfig::n_layers},
                              {"-h", &ModelConfig::n_heads},    {"-kv", &ModelConfig::n_kv_heads},
                              {"-hd", &ModelConfig::head_dim},  {"-e", &ModelConfig::n_experts},
                              {"-k", &ModelConfig::top_k},      {"-f", &ModelConfig::expert_hidden},
                              {"-v", &ModelConfig::vocab_size}, {"-c", &ModelConfig::max_context}};
  for (const Field& f : fields) {
    if (!detail::expect(p, f.tag) || !detail::parse_uint(p, out.*f.member)) return false;
  }
  out.qk_norm = QkNorm::none;
  out.qkv_bias = false;
  out.shared_expert_hidden = out.dense_hidden = 0;
  out.dense_layers = 0;
  if (detail::expect(p, "-qkh")) out.qk_norm = QkNorm::per_head;
  else if (detail::expect(p, "-qkw")) out.qk_norm = QkNorm::whole;
  if (detail::expect(p, "-qkvb")) out.qkv_bias = true;
  if (detail::expect(p, "-s") && (!detail::parse_uint(p, out.shared_expert_hidden) || out.shared_expert_hidden == 0))
    return false;
  if (detail::expect(p, "-fd")) {
    if (!detail::parse_uint(p, out.dense_hidden) || !detail::expect(p, "-dl") ||
        !detail::parse_hex(p, out.dense_layers))
      return false;
  }
  return *p == '\0';
}

// For compile-time use: a malformed key is a build error.
consteval ModelConfig config_from_key(const char* key) {
  ModelConfig c{};
  if (!try_parse_config_key(key, c)) detail::invalid_config_key_see_config_hpp_for_the_format();
  return c;
}

// Longest key: 7 + 10 fields of at most 3+10 chars, then the optional parts (4 + 5 +
// 12 + 13 + 19 + 5).
inline constexpr size_t kConfigKeyMax = 224;

inline int format_config_key(const ModelConfig& c, char* buf, size_t n) {
  int at =
      format(buf, n, "%s-d%d-l%d-h%d-kv%d-hd%d-e%d-k%d-f%d-v%d-c%d", family_name(c.family), c.d_model, c.n_layers,
             c.n_heads, c.n_kv_heads, c.head_dim, c.n_experts, c.top_k, c.expert_hidden, c.vocab_size, c.max_context);
  // The optional parts; `rest` stays inside buf whatever the lengths.
  const auto rest = [&]() { return static_cast<size_t>(at) < n ? buf + at : buf + (n > 0 ? n - 1 : 0); };
  const auto room = [&]() { return static_cast<size_t>(at) < n ? n - static_cast<size_t>(at) : (n > 0 ? 1 : 0); };
  if (c.qk_norm == QkNorm::per_head) at += format(rest(), room(), "-qkh");
  if (c.qk_norm == QkNorm::whole) at += format(rest(), room(), "-qkw");
  if (c.qkv_bias) at += format(rest(), room(), "-qkvb");
  if (c.shared_expert_hidden > 0) at += format(rest(), room(), "-s%d", c.shared_expert_hidden);
  if (c.dense_layers != 0) {
    // %x takes an unsigned (32 bits on the boards): the mask in two halves.
    const auto hi = static_cast<unsigned>(c.dense_layers >> 32), lo = static_cast<unsigned>(c.dense_layers);
    if (hi != 0) at += format(rest(), room(), "-fd%d-dl%x%08x", c.dense_hidden, hi, lo);
    else at += format(rest(), room(), "-fd%d-dl%x", c.dense_hidden, lo);
  }
  return at;
}

// A key held by value, for messages: `ConfigKey(cfg).c_str()`.
struct ConfigKey {
  char text[kConfigKeyMax];
  explicit ConfigKey(const ModelConfig& c) { format_config_key(c, text, sizeof text); }
  const char* c_str() const { return text; }
};

}  // namespace moe
