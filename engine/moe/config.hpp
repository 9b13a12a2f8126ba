// The model's shape, declared once. The engine is a template over a ModelConfig value,
// so every buffer it owns has a size known at compile time.
//
// A config has a canonical text form, its key:
//   llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128
//   family-d<d_model>-l<layers>-h<heads>-kv<kv heads>-hd<head dim>-e<experts>-k<top k>
//         -f<expert hidden>-v<vocab>-c<max context>
// Keys name configs in the CMake option MOE_CONFIGS, in moe_convert's report and in
// every mismatch message, so a user can copy one from an error straight into a build.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "moe/format.hpp"

namespace moe {

enum class Family : uint8_t { classic = 0, llama = 1 };

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

  constexpr int q_dim() const { return n_heads * head_dim; }
  constexpr int kv_dim() const { return n_kv_heads * head_dim; }
  constexpr bool has_biases() const { return family == Family::classic; }
  constexpr bool has_position_table() const { return family == Family::classic; }
  constexpr bool gated_experts() const { return family == Family::llama; }

  constexpr bool operator==(const ModelConfig&) const = default;
};

// How attention scores are scaled before the softmax. Values match moe.fb.AttentionScale.
enum class AttentionScaleRule : uint8_t {
  inv_sqrt_head_dim = 0,   // 1/sqrt(head_dim): every Hugging Face family
  inv_sqrt_model_dim = 1,  // 1/sqrt(d_model): makeMoE's Head (C**-0.5 with C = n_embed)
};

// The rule as makeMoE's config.json and moe_train's training record spell it.
constexpr const char* attention_scale_name(AttentionScaleRule r) {
  return r == AttentionScaleRule::inv_sqrt_model_dim ? "n_embed**-0.5" : "head_size**-0.5";
}
constexpr bool parse_attention_scale(const char* text, AttentionScaleRule& out) {
  constexpr AttentionScaleRule rules[] = {AttentionScaleRule::inv_sqrt_head_dim,
                                          AttentionScaleRule::inv_sqrt_model_dim};
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

// The constants a model carries besides its dimensions: what the .moe file stores,
// what the converter reads from config.json, what the trainer trains with and what the
// checkpoint writer records. Declared once, with one set of defaults; a checkpoint
// layout that defaults otherwise for an absent key says so in its description
// (converter/checkpoint_layout.hpp), and a training preset that differs sets its value.
struct ModelConstants {
  float norm_eps = 1e-5f;      // LayerNorm / RMSNorm epsilon
  float rope_theta = 10000.f;  // RoPE base (llama family; unused by classic)
  AttentionScaleRule attention_scale = AttentionScaleRule::inv_sqrt_head_dim;
  double capacity_factor = 0.;  // > 0: makeMoE expert capacity (schema/moe_model.fbs); 0: none
  int32_t bos_token_id = -1;    // -1: none
  int32_t eos_token_id = -1;    // -1: none

  constexpr bool operator==(const ModelConstants&) const = default;
};

// The factor attention scores are multiplied by, from the rule.
inline float attention_factor(const ModelConfig& c, AttentionScaleRule rule) {
  return 1.f / std::sqrt(static_cast<float>(rule == AttentionScaleRule::inv_sqrt_model_dim ? c.d_model : c.head_dim));
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
  // Bounds keep every derived size (q_dim, rows x cols) far inside int and long.
  if (c.d_model > (1 << 20) || c.expert_hidden > (1 << 22) || c.vocab_size > (1 << 22) || c.max_context > (1 << 22) ||
      c.n_layers > 4096 || c.n_experts > 4096 || c.n_heads > 4096 || c.head_dim > (1 << 16) ||
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
  return *p == '\0';
}

// For compile-time use: a malformed key is a build error.
consteval ModelConfig config_from_key(const char* key) {
  ModelConfig c{};
  if (!try_parse_config_key(key, c)) detail::invalid_config_key_see_config_hpp_for_the_format();
  return c;
}

// Longest key: 7 + 10 fields of at most 3+10 chars.
inline constexpr size_t kConfigKeyMax = 160;

inline int format_config_key(const ModelConfig& c, char* buf, size_t n) {
  return format(buf, n, "%s-d%d-l%d-h%d-kv%d-hd%d-e%d-k%d-f%d-v%d-c%d", family_name(c.family), c.d_model, c.n_layers,
                c.n_heads, c.n_kv_heads, c.head_dim, c.n_experts, c.top_k, c.expert_hidden, c.vocab_size,
                c.max_context);
}

// A key held by value, for messages: `ConfigKey(cfg).c_str()`.
struct ConfigKey {
  char text[kConfigKeyMax];
  explicit ConfigKey(const ModelConfig& c) { format_config_key(c, text, sizeof text); }
  const char* c_str() const { return text; }
};

}  // namespace moe
