// A verified, zero-copy view of a .moe file. `ModelFile::open` runs every check once,
// before the first use: identifier, size, FlatBuffers structure, format version,
// config sanity, each tensor against the canonical layout (dtype, shape, byte count,
// alignment, int8 scales, CRC-32C), and the tokenizer. After it succeeds, the engine
// can bind weights without further checks.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "moe/config.hpp"
#include "moe/crc32c.hpp"
#include "moe/error.hpp"
#include "moe/model_layout.hpp"
#include "moe/tensor.hpp"
#include "moe/text/bpe_check.hpp"
#include "moe/tokenizer.hpp"
#include "moe_model_generated.h"

namespace moe {

// The newest format version this engine reads and the converter writes; it reads every
// version from 1 on. A file gets the lowest version that holds it (required_format_version),
// so a Mixtral or makeMoE model still loads in an engine built before version 2. Version
// 3 (tensor bytes after the FlatBuffer) is what the converter writes for large models;
// 4 adds BPE tokenizers (tensor bytes inside or after the FlatBuffer, per tensor); 5,
// 4-bit (q4) tensors.
inline constexpr uint32_t kFormatVersion = 5;
inline constexpr size_t kTensorAlignment = 64;

static_assert(FLATBUFFERS_LITTLEENDIAN, "the .moe format is read in place: little-endian targets only");
static_assert(static_cast<int>(fb::TensorRole_MAX) + 1 == kTensorRoleCount &&
                  static_cast<int>(fb::TensorRole_LmHeadBias) == static_cast<int>(TensorRole::lm_head_bias) &&
                  static_cast<int>(fb::TensorRole_ExpertW3) == static_cast<int>(TensorRole::expert_w3),
              "schema/moe_model.fbs TensorRole and moe::TensorRole must list the same roles in the same order");
static_assert(static_cast<int>(fb::DType_I8) == static_cast<int>(DType::i8) &&
                  static_cast<int>(fb::DType_MAX) == static_cast<int>(DType::q4) &&
                  static_cast<int>(fb::DType_F16) == static_cast<int>(DType::f16),
              "schema/moe_model.fbs DType and moe::DType must agree");
static_assert(static_cast<int>(fb::Family_Llama) == static_cast<int>(Family::llama),
              "schema/moe_model.fbs Family and moe::Family must agree");
static_assert(static_cast<int>(fb::AttentionScale_InvSqrtModelDim) ==
                      static_cast<int>(AttentionScaleRule::inv_sqrt_model_dim) &&
                  static_cast<int>(fb::AttentionScale_MAX) == static_cast<int>(AttentionScaleRule::multiplier),
              "schema/moe_model.fbs AttentionScale and moe::AttentionScaleRule must agree");
static_assert(static_cast<int>(fb::QkNorm_Whole) == static_cast<int>(QkNorm::whole) &&
                  static_cast<int>(fb::QkNorm_MAX) == static_cast<int>(QkNorm::whole) &&
                  static_cast<int>(fb::RouterWeights_FullSoftmax) == static_cast<int>(RouterWeights::full_softmax) &&
                  static_cast<int>(fb::RouterWeights_MAX) == static_cast<int>(RouterWeights::full_softmax),
              "schema/moe_model.fbs QkNorm/RouterWeights and moe::QkNorm/RouterWeights must agree");

// Version 1 knows Mixtral's and makeMoE's structure and constants; anything else needs 2.
inline uint32_t required_format_version(const ModelConfig& c, const ModelConstants& k) {
  return c.has_optional_parts() || k.has_family_constants() ? 2u : 1u;
}
// ... a file with 4-bit (q4) tensors needs 5; with a BPE tokenizer, 4; one whose
// tensors follow the FlatBuffer, 3.
inline uint32_t required_format_version(const ModelConfig& c, const ModelConstants& k, bool bpe_tokenizer,
                                        bool tensors_after, bool q4 = false) {
  const uint32_t v = required_format_version(c, k);
  return q4 ? 5u : bpe_tokenizer ? 4u : tensors_after ? (v > 3u ? v : 3u) : v;
}

// Where a tensor's bytes are: inside the FlatBuffer (versions 1, 2) or after it (3).
struct TensorBytes {
  const uint8_t* data = nullptr;
  uint64_t bytes = 0;
  const float* scales = nullptr;
  uint64_t scale_count = 0;
};

struct OpenOptions {
  // CRC-32C over every weight byte: about 1 ms per MB. Leave on unless the bytes were
  // checked another way (e.g. a signed firmware image).
  bool verify_checksums = true;
};

class ModelFile {
 public:
  // `data` must stay valid and unchanged while the ModelFile (or an engine bound to
  // it) is in use, and must be 64-byte aligned (mmap and `alignas(64)` arrays are).
  static Error open(const void* data, size_t size, ModelFile& out, OpenOptions options = {});

  const fb::Model& model() const { return *model_; }
  uint32_t format_version() const { return model_->format_version(); }
  const ModelConfig& config() const { return config_; }
  const ModelConstants& constants() const { return constants_; }
  const CharTokenizer& tokenizer() const { return tokenizer_; }     // char models
  const text::BpeTokenizer& bpe_tokenizer() const { return bpe_; }  // Hugging Face BPE models
  size_t size_bytes() const { return size_; }

  // Tensors in canonical order (model_layout.hpp); open() checked each against its spec.
  const fb::Tensor& tensor(int index) const {
    return *model_->tensors()->Get(static_cast<flatbuffers::uoffset_t>(index));
  }
  TensorBytes bytes(int index) const;
  Matrix matrix(int index) const {
    const fb::Tensor& t = tensor(index);
    const TensorBytes b = bytes(index);
    Matrix m;
    m.data = b.data;
    m.scales = b.scale_count > 0 ? b.scales : nullptr;
    m.dtype = static_cast<DType>(t.dtype());
    m.rows = static_cast<int>(t.shape()->Get(0));
    m.cols = static_cast<int>(t.shape()->Get(1));
    m.group_size = static_cast<int>(t.group_size());
    return m;
  }
  Vector vector(int index) const {
    const fb::Tensor& t = tensor(index);
    return Vector{reinterpret_cast<const float*>(bytes(index).data), static_cast<int>(t.shape()->Get(0))};
  }

 private:
  const fb::Model* model_ = nullptr;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  ModelConfig config_{};
  ModelConstants constants_{};
  CharTokenizer tokenizer_{};
  text::BpeTokenizer bpe_{};
};

namespace detail {

inline Error check_config(const fb::Config* fc, ModelConfig& c, ModelConstants& rt) {
  if (fc == nullptr) return Error::make(ErrorCode::corrupt, "model file has no config table");
  if (fc->family() != fb::Family_Classic && fc->family() != fb::Family_Llama)
    return Error::make(ErrorCode::corrupt, "unknown model family %d in config", static_cast<int>(fc->family()));
  const auto as_int = [](uint32_t v) { return v > 0x7fffffffu ? -1 : static_cast<int>(v); };
  c.family = static_cast<Family>(fc->family());
  c.d_model = as_int(fc->d_model());
  c.n_layers = as_int(fc->n_layers());
  c.n_heads = as_int(fc->n_heads());
  c.n_kv_heads = as_int(fc->n_kv_heads());
  c.head_dim = as_int(fc->head_dim());
  c.n_experts = as_int(fc->n_experts());
  c.top_k = as_int(fc->top_k());
  c.expert_hidden = as_int(fc->expert_hidden());
  c.vocab_size = as_int(fc->vocab_size());
  c.max_context = as_int(fc->max_context());
  c.qk_norm = static_cast<QkNorm>(fc->qk_norm());
  c.qkv_bias = fc->qkv_bias();
  c.shared_expert_hidden = as_int(fc->shared_expert_hidden());
  c.dense_hidden = as_int(fc->dense_hidden());
  c.dense_layers = fc->dense_layers();
  if (fc->qk_norm() > fb::QkNorm_MAX)
    return Error::make(ErrorCode::corrupt, "unknown q/k norm %d in config", static_cast<int>(fc->qk_norm()));
  if (const char* why = config_problem(c))
    return Error::make(ErrorCode::corrupt, "invalid config %s: %s", ConfigKey(c).c_str(), why);

  rt.norm_eps = fc->norm_eps();
  if (!(rt.norm_eps > 0.f && rt.norm_eps < 1.f))
    return Error::make(ErrorCode::corrupt, "invalid norm_eps %g in config (expected 0 < eps < 1)",
                       static_cast<double>(rt.norm_eps));
  rt.rope_theta = fc->rope_theta();
  if (c.family == Family::llama && !(rt.rope_theta > 1.f && std::isfinite(rt.rope_theta)))
    return Error::make(ErrorCode::corrupt, "invalid rope_theta %g in config (expected a finite value > 1)",
                       static_cast<double>(rt.rope_theta));
  if (fc->attention_scale() > fb::AttentionScale_MAX)
    return Error::make(ErrorCode::corrupt, "unknown attention scale rule %d in config",
                       static_cast<int>(fc->attention_scale()));
  rt.attention_scale = static_cast<AttentionScaleRule>(fc->attention_scale());
  rt.capacity_factor = fc->capacity_factor();
  if (!(rt.capacity_factor >= 0.) || !std::isfinite(rt.capacity_factor))
    return Error::make(ErrorCode::corrupt, "invalid capacity_factor %g in config (expected a finite value >= 0)",
                       rt.capacity_factor);
  if (rt.attention_scale == AttentionScaleRule::multiplier) {
    rt.attention_multiplier = fc->attention_multiplier();
    if (!(rt.attention_multiplier > 0.f && std::isfinite(rt.attention_multiplier)))
      return Error::make(ErrorCode::corrupt, "invalid attention_multiplier %g in config (expected a finite value > 0)",
                         static_cast<double>(rt.attention_multiplier));
  }
  if (fc->router_weights() > fb::RouterWeights_MAX)
    return Error::make(ErrorCode::corrupt, "unknown router weighting %d in config",
                       static_cast<int>(fc->router_weights()));
  rt.router_weights = static_cast<RouterWeights>(fc->router_weights());
  rt.clip_qkv = fc->clip_qkv();
  rt.embedding_multiplier = fc->embedding_multiplier();
  rt.residual_multiplier = fc->residual_multiplier();
  rt.logits_scaling = fc->logits_scaling();
  if (!(rt.clip_qkv >= 0.f && std::isfinite(rt.clip_qkv)))
    return Error::make(ErrorCode::corrupt, "invalid clip_qkv %g in config (expected a finite value >= 0)",
                       static_cast<double>(rt.clip_qkv));
  for (float m : {rt.embedding_multiplier, rt.residual_multiplier, rt.logits_scaling})
    if (!(m > 0.f && std::isfinite(m)))
      return Error::make(ErrorCode::corrupt,
                         "invalid multiplier %g in config (embedding/residual multiplier and logits scaling must be "
                         "finite and > 0)",
                         static_cast<double>(m));
  rt.bos_token_id = fc->bos_token_id();
  rt.eos_token_id = fc->eos_token_id();
  if (rt.bos_token_id < -1 || rt.bos_token_id >= c.vocab_size || rt.eos_token_id < -1 ||
      rt.eos_token_id >= c.vocab_size)
    return Error::make(ErrorCode::corrupt, "bos/eos token id (%d/%d) outside the vocabulary of %d",
                       static_cast<int>(rt.bos_token_id), static_cast<int>(rt.eos_token_id), c.vocab_size);
  return Error::none();
}

inline Error check_tokenizer(const fb::Tokenizer* ft, const ModelConfig& c, CharTokenizer& out, text::BpeTokenizer& bpe,
                             bool verify_checksums) {
  if (ft == nullptr || ft->kind() == fb::TokenizerKind_None) return Error::none();
  if (ft->kind() == fb::TokenizerKind_Bpe) return text::check_bpe_tokenizer(ft, c.vocab_size, bpe, verify_checksums);
  if (ft->kind() != fb::TokenizerKind_Char)
    return Error::make(ErrorCode::bad_tokenizer, "unknown tokenizer kind %d", static_cast<int>(ft->kind()));
  const auto* chars = ft->chars();
  if (chars == nullptr || static_cast<int>(chars->size()) != c.vocab_size)
    return Error::make(ErrorCode::bad_tokenizer, "char tokenizer has %u characters, the config's vocabulary has %d",
                       chars ? static_cast<unsigned>(chars->size()) : 0u, c.vocab_size);
  for (flatbuffers::uoffset_t i = 0; i < chars->size(); ++i) {
    const uint32_t cp = chars->Get(i);
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return Error::make(ErrorCode::bad_tokenizer, "tokenizer entry %u is not a Unicode code point (0x%X)",
                         static_cast<unsigned>(i), static_cast<unsigned>(cp));
  }
  // Each character once (the converter refuses duplicates; a file must not bring them
  // back). Vocabularies are written in ascending order, checked in one pass; another
  // order is compared pairwise, so it is accepted only up to kUnsortedChars characters.
  constexpr flatbuffers::uoffset_t kUnsortedChars = 8192;
  bool ascending = true;
  for (flatbuffers::uoffset_t i = 1; i < chars->size() && ascending; ++i) ascending = chars->Get(i - 1) < chars->Get(i);
  if (!ascending) {
    if (chars->size() > kUnsortedChars)
      return Error::make(ErrorCode::bad_tokenizer,
                         "char tokenizer of %u characters is not in ascending order (allowed up to %u characters)",
                         static_cast<unsigned>(chars->size()), static_cast<unsigned>(kUnsortedChars));
    for (flatbuffers::uoffset_t i = 1; i < chars->size(); ++i)
      for (flatbuffers::uoffset_t j = 0; j < i; ++j)
        if (chars->Get(i) == chars->Get(j))
          return Error::make(ErrorCode::bad_tokenizer, "char tokenizer lists U+%04X twice (entries %u and %u)",
                             static_cast<unsigned>(chars->Get(i)), static_cast<unsigned>(j), static_cast<unsigned>(i));
  }
  out = CharTokenizer(chars->data(), static_cast<int>(chars->size()));
  return Error::none();
}

// Index of the first NaN/Inf among n bytes of f32 or f16 values (an exponent of all
// ones), or -1; int8 values are always finite (q4 scales: first_non_finite_q4_scale).
inline long first_non_finite(const uint8_t* p, size_t n, DType dtype) {
  if (dtype == DType::f32) {
    for (size_t i = 0; i + 4 <= n; i += 4) {
      uint32_t bits;
      std::memcpy(&bits, p + i, 4);
      if ((bits & 0x7f800000u) == 0x7f800000u) return static_cast<long>(i / 4);
    }
  } else if (dtype == DType::f16) {
    for (size_t i = 0; i + 2 <= n; i += 2) {
      const uint16_t bits = static_cast<uint16_t>(p[i] | p[i + 1] << 8);
      if ((bits & 0x7c00u) == 0x7c00u) return static_cast<long>(i / 2);
    }
  }
  return -1;
}

// The first column of the first q4 block whose f16 scale is NaN or infinite, as an
// element index (row * cols + column), or -1.
inline long first_non_finite_q4_scale(const uint8_t* data, int rows, int cols) {
  const int blocks = cols / kQ4Block;
  for (int r = 0; r < rows; ++r) {
    const uint8_t* group = data + static_cast<long>(r) * blocks * kQ4BlockBytes;
    for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
      const int g = q4_group_blocks(blocks, gi);
      for (int j = 0; j < g; ++j)
        if ((static_cast<uint16_t>(group[2 * j] | group[2 * j + 1] << 8) & 0x7c00u) == 0x7c00u)
          return static_cast<long>(r) * cols + gi * kQ4GroupBlocks * kQ4Block + 4 * j;
      group += g * kQ4BlockBytes;
    }
  }
  return -1;
}

// Version 3 keeps every tensor's bytes after the FlatBuffer; version 4 each tensor
// either inside (in-memory conversion) or after it (streamed).
inline bool bytes_after_flatbuffer(const fb::Tensor* t, uint32_t version) {
  return version == 3 || (version >= 4 && t->data() == nullptr);
}

// The tensor's bytes; after the FlatBuffer, only once check_tensor_range accepted them.
inline TensorBytes tensor_bytes(const fb::Tensor* t, const uint8_t* base, uint32_t version) {
  TensorBytes b;
  if (bytes_after_flatbuffer(t, version)) {
    b.data = base + t->data_offset();
    b.bytes = t->data_bytes();
    b.scales = reinterpret_cast<const float*>(base + t->scales_offset());
    b.scale_count = t->scales_count();
    return b;
  }
  if (t->data() != nullptr) b.data = t->data()->data(), b.bytes = t->data()->size();
  if (t->scales() != nullptr) b.scales = t->scales()->data(), b.scale_count = t->scales()->size();
  return b;
}

// Version 3: the bytes must lie after the FlatBuffer (`begin`), inside the file, aligned.
inline Error check_tensor_range(const fb::Tensor* t, uint64_t begin, uint64_t size, const char* name) {
  const uint64_t ranges[2][2] = {{t->data_offset(), t->data_bytes()}, {t->scales_offset(), t->scales_count() * 4}};
  for (int i = 0; i < 2; ++i) {
    const uint64_t* r = ranges[i];
    if (i == 1 && r[1] == 0) continue;  // no scales
    if (r[0] < begin || r[0] > size || r[1] > size - r[0] || r[1] > (uint64_t{1} << 62))
      return Error::make(ErrorCode::corrupt,
                         "tensor '%s' has bytes outside the file (offset %lu + %lu bytes, file %lu bytes): the file "
                         "is truncated or corrupt",
                         name, static_cast<unsigned long>(r[0]), static_cast<unsigned long>(r[1]),
                         static_cast<unsigned long>(size));
    if (r[0] % kTensorAlignment != 0)
      return Error::make(ErrorCode::corrupt, "tensor '%s' data is not %lu-byte aligned in the file", name,
                         static_cast<unsigned long>(kTensorAlignment));
  }
  return Error::none();
}

inline Error check_tensor(const fb::Tensor* t, const TensorSpec& spec, int index, const uint8_t* base, uint64_t size,
                          uint64_t flatbuffer_end, uint32_t version, bool verify_checksums) {
  // The tensor's description, formatted only when there is an error to report.
  char want_text[96];
  auto want = [&] {
    describe_tensor(spec.role, spec.layer, spec.expert, want_text, sizeof want_text);
    return want_text;
  };
  const char* name = t->name() ? t->name()->c_str() : "(unnamed)";
  if (static_cast<int>(t->role()) != static_cast<int>(spec.role) || t->layer() != spec.layer ||
      t->expert() != spec.expert) {
    char got[96];
    describe_tensor(static_cast<TensorRole>(t->role()), t->layer(), t->expert(), got, sizeof got);
    return Error::make(
        ErrorCode::bad_tensor,
        "tensor %d is '%s' (%s) but the layout of this config needs %s there: a tensor is missing or extra", index,
        name, got, want());
  }
  const auto dtype = t->dtype();
  if (dtype != fb::DType_F32 && dtype != fb::DType_F16 && dtype != fb::DType_I8 && dtype != fb::DType_Q4)
    return Error::make(ErrorCode::bad_tensor, "tensor '%s' (%s) has unknown dtype %d", name, want(),
                       static_cast<int>(dtype));
  if (spec.klass == TensorClass::f32_only && dtype != fb::DType_F32)
    return Error::make(ErrorCode::bad_tensor,
                       "tensor '%s' (%s) must be f32 (norms, biases and routers are never quantized), found %s", name,
                       want(), dtype_name(static_cast<DType>(dtype)));
  const auto* shape = t->shape();
  const uint32_t rows = static_cast<uint32_t>(spec.rows), cols = static_cast<uint32_t>(spec.cols);
  const bool shape_ok =
      shape != nullptr && (spec.is_matrix() ? shape->size() == 2 && shape->Get(0) == rows && shape->Get(1) == cols
                                            : shape->size() == 1 && shape->Get(0) == rows);
  if (!shape_ok) {
    char found[48] = "none";
    if (shape != nullptr && shape->size() == 1)
      format(found, sizeof found, "[%u]", static_cast<unsigned>(shape->Get(0)));
    if (shape != nullptr && shape->size() == 2)
      format(found, sizeof found, "[%u, %u]", static_cast<unsigned>(shape->Get(0)),
             static_cast<unsigned>(shape->Get(1)));
    if (shape != nullptr && shape->size() > 2)
      format(found, sizeof found, "%u dimensions", static_cast<unsigned>(shape->size()));
    if (spec.is_matrix())
      return Error::make(ErrorCode::bad_tensor, "tensor '%s' (%s) has shape %s, the config needs [%u, %u]", name,
                         want(), found, static_cast<unsigned>(rows), static_cast<unsigned>(cols));
    return Error::make(ErrorCode::bad_tensor, "tensor '%s' (%s) has shape %s, the config needs [%u]", name, want(),
                       found, static_cast<unsigned>(rows));
  }
  if (bytes_after_flatbuffer(t, version)) {
    if (t->data() != nullptr || t->scales() != nullptr)
      return Error::make(ErrorCode::corrupt, "tensor '%s' (%s) has bytes both inside and after the FlatBuffer", name,
                         want());
    if (Error e = check_tensor_range(t, flatbuffer_end, size, name)) return e;
  }
  if (dtype == fb::DType_Q4 && (cols % kQ4Block != 0 || t->group_size() != kQ4Block || !spec.is_matrix()))
    return Error::make(ErrorCode::corrupt,
                       "tensor '%s' (%s) is q4 with group size %u and %u columns: q4 needs groups of 32 and whole "
                       "groups per row",
                       name, want(), static_cast<unsigned>(t->group_size()), static_cast<unsigned>(cols));
  if (dtype == fb::DType_Q4 && version < 5)
    return Error::make(ErrorCode::corrupt, "tensor '%s' (%s) is q4 in a version %u file (q4 needs version 5)", name,
                       want(), static_cast<unsigned>(version));
  const TensorBytes tb = tensor_bytes(t, base, version);
  const uint64_t want_bytes = data_bytes(static_cast<DType>(dtype), static_cast<uint64_t>(spec.elements()));
  if (tb.data == nullptr || tb.bytes != want_bytes)
    return Error::make(ErrorCode::corrupt, "tensor '%s' (%s) holds %lu bytes, its shape and dtype need %lu", name,
                       want(), static_cast<unsigned long>(tb.bytes), static_cast<unsigned long>(want_bytes));
  if ((tb.data - base) % static_cast<long>(kTensorAlignment) != 0)
    return Error::make(ErrorCode::corrupt, "tensor '%s' (%s) data is not %lu-byte aligned in the file", name, want(),
                       static_cast<unsigned long>(kTensorAlignment));
  if (dtype == fb::DType_I8) {
    const uint32_t g = t->group_size();
    if (g == 0 || cols % g != 0)
      return Error::make(ErrorCode::corrupt,
                         "tensor '%s' (%s) has int8 group size %u, which does not divide its %u columns", name, want(),
                         static_cast<unsigned>(g), static_cast<unsigned>(cols));
    const unsigned long want_scales = static_cast<unsigned long>(rows) * (cols / g);
    if (tb.scale_count != want_scales)
      return Error::make(ErrorCode::corrupt, "tensor '%s' (%s) has %lu int8 scales, needs %lu (%u rows x %u groups)",
                         name, want(), static_cast<unsigned long>(tb.scale_count), want_scales,
                         static_cast<unsigned>(rows), static_cast<unsigned>(cols / g));
    // A row's sum of 127 x scale x its columns must stay a finite float.
    const float max_scale = std::numeric_limits<float>::max() / (127.f * static_cast<float>(cols));
    for (uint64_t i = 0; i < tb.scale_count; ++i) {
      float s;
      std::memcpy(&s, tb.scales + i, sizeof s);  // little-endian, aligned: the file's own bytes
      if (!(s > 0.f) || !(s <= max_scale))
        return Error::make(ErrorCode::bad_tensor,
                           "tensor '%s' (%s) has int8 scale %g at row %u: scales must be finite and > 0, at most %g "
                           "(so that 127 x scale x %u columns stays finite)",
                           name, want(), static_cast<double>(s), static_cast<unsigned>(i / (cols / g)),
                           static_cast<double>(max_scale), static_cast<unsigned>(cols));
    }
  } else if (tb.scale_count != 0) {
    return Error::make(ErrorCode::corrupt, "tensor '%s' (%s) is %s but carries int8 scales", name, want(),
                       dtype_name(static_cast<DType>(dtype)));
  }
  if (verify_checksums) {
    // One pass over the bytes, in pieces that stay in cache: the CRC, and for f32/f16
    // every value finite (a NaN or Inf under a correct CRC is an edited file).
    uint32_t crc = 0;
    constexpr size_t kPiece = 16384;
    for (uint64_t at = 0; at < tb.bytes; at += kPiece) {
      const size_t n = static_cast<size_t>(tb.bytes - at < kPiece ? tb.bytes - at : kPiece);
      crc = crc32c_update(crc, tb.data + at, n);
      const long bad = first_non_finite(tb.data + at, n, static_cast<DType>(dtype));
      if (bad >= 0) {
        const long element = static_cast<long>(at / data_bytes(static_cast<DType>(dtype), 1)) + bad;
        return Error::make(ErrorCode::bad_tensor,
                           "tensor '%s' (%s) holds a NaN or infinite value at element %ld (row %ld)", name, want(),
                           element, element / static_cast<long>(spec.is_matrix() ? cols : 1));
      }
    }
    if (tb.scale_count != 0) crc = crc32c_update(crc, tb.scales, static_cast<size_t>(tb.scale_count) * sizeof(float));
    if (dtype == fb::DType_Q4) {
      const long bad = first_non_finite_q4_scale(tb.data, static_cast<int>(rows), static_cast<int>(cols));
      if (bad >= 0)
        return Error::make(ErrorCode::bad_tensor,
                           "tensor '%s' (%s) has a NaN or infinite q4 scale for the block at element %ld (row %ld)",
                           name, want(), bad, bad / static_cast<long>(cols));
    }
    if (crc != t->crc32c())
      return Error::make(ErrorCode::corrupt,
                         "tensor '%s' (%s) fails its checksum (CRC-32C %08x, file says %08x): the file is corrupt",
                         name, want(), static_cast<unsigned>(crc), static_cast<unsigned>(t->crc32c()));
  }
  return Error::none();
}

}  // namespace detail

inline Error ModelFile::open(const void* data, size_t size, ModelFile& out, OpenOptions options) {
  out = ModelFile{};
  const auto* bytes = static_cast<const uint8_t*>(data);
  // Layout of a size-prefixed FlatBuffer: [u32 size][u32 root offset][4-byte identifier]...
  constexpr size_t kHeader = 12;
  if (bytes == nullptr || size < kHeader)
    return Error::make(ErrorCode::not_a_model, "not a .moe file: %lu bytes is too small",
                       static_cast<unsigned long>(size));
  if (!flatbuffers::BufferHasIdentifier(bytes, fb::ModelIdentifier(), /*size_prefixed=*/true)) {
    char shown[5] = {};
    for (int i = 0; i < 4; ++i)
      shown[i] = (bytes[8 + i] >= 0x20 && bytes[8 + i] < 0x7f) ? static_cast<char>(bytes[8 + i]) : '.';
    return Error::make(ErrorCode::not_a_model,
                       "not a .moe file: identifier is '%s' (%02x %02x %02x %02x), expected '%s'", shown, bytes[8],
                       bytes[9], bytes[10], bytes[11], fb::ModelIdentifier());
  }
  // The FlatBuffer is the first `flatbuffer_end` bytes; version 3 files continue with
  // the tensors' bytes.
  const uint32_t declared = flatbuffers::ReadScalar<uint32_t>(bytes);
  const uint64_t flatbuffer_end = static_cast<uint64_t>(declared) + 4;
  if (flatbuffer_end > size)
    return Error::make(ErrorCode::corrupt, "model file is truncated: %lu bytes, its header says %lu",
                       static_cast<unsigned long>(size), static_cast<unsigned long>(flatbuffer_end));
  if (reinterpret_cast<uintptr_t>(bytes) % kTensorAlignment != 0)
    return Error::make(ErrorCode::io,
                       "model buffer is not %lu-byte aligned: map the file or place it in an alignas(64) array",
                       static_cast<unsigned long>(kTensorAlignment));
  if (flatbuffer_end >= FLATBUFFERS_MAX_BUFFER_SIZE)
    return Error::make(ErrorCode::corrupt, "model file of %lu bytes exceeds the FlatBuffers limit of 2 GiB",
                       static_cast<unsigned long>(flatbuffer_end));
  flatbuffers::Verifier verifier(bytes, static_cast<size_t>(flatbuffer_end));
  if (!fb::VerifySizePrefixedModelBuffer(verifier))
    return Error::make(ErrorCode::corrupt, "model file is corrupt: its FlatBuffers structure does not verify");

  const fb::Model* model = fb::GetSizePrefixedModel(bytes);
  if (model->format_version() < 1 || model->format_version() > kFormatVersion)
    return Error::make(ErrorCode::unsupported_version,
                       "model file has format version %u, this engine reads versions 1 to %u",
                       static_cast<unsigned>(model->format_version()), static_cast<unsigned>(kFormatVersion));
  const uint32_t version = model->format_version();
  if (version < 3 && flatbuffer_end < size)
    return Error::make(ErrorCode::corrupt,
                       "model file has %lu bytes after its end (header says %lu bytes): not one .moe file",
                       static_cast<unsigned long>(size - flatbuffer_end), static_cast<unsigned long>(flatbuffer_end));
  ModelConfig config;
  ModelConstants constants;
  if (Error e = detail::check_config(model->config(), config, constants)) return e;
  if (required_format_version(config, constants) > model->format_version())
    return Error::make(ErrorCode::corrupt, "model file says format version %u but uses parts of version %u",
                       static_cast<unsigned>(model->format_version()),
                       static_cast<unsigned>(required_format_version(config, constants)));
  CharTokenizer tokenizer;
  text::BpeTokenizer bpe;
  if (Error e = detail::check_tokenizer(model->tokenizer(), config, tokenizer, bpe, options.verify_checksums)) return e;
  if (bpe.present() && version < 4)
    return Error::make(ErrorCode::corrupt, "model file says format version %u but has a BPE tokenizer (version 4)",
                       static_cast<unsigned>(version));

  const auto* tensors = model->tensors();
  const int have = tensors ? static_cast<int>(tensors->size()) : 0;
  const int need = tensor_count(config);
  Error failure = Error::none();
  int index = 0;
  for_each_tensor_spec(config, [&](const TensorSpec& spec) {
    if (!failure.ok()) return;
    if (index >= have) {
      char want[96];
      describe_tensor(spec.role, spec.layer, spec.expert, want, sizeof want);
      failure = Error::make(ErrorCode::bad_tensor, "tensor %s is missing: the file has %d tensors, config %s needs %d",
                            want, have, ConfigKey(config).c_str(), need);
      return;
    }
    failure = detail::check_tensor(tensors->Get(static_cast<flatbuffers::uoffset_t>(index)), spec, index, bytes, size,
                                   flatbuffer_end, version, options.verify_checksums);
    ++index;
  });
  if (!failure.ok()) return failure;
  if (have != need)
    return Error::make(ErrorCode::bad_tensor, "model file has %d tensors, config %s needs %d: %d unexpected", have,
                       ConfigKey(config).c_str(), need, have - need);

  out.model_ = model;
  out.base_ = bytes;
  out.size_ = size;
  out.config_ = config;
  out.constants_ = constants;
  out.tokenizer_ = tokenizer;
  out.bpe_ = bpe;
  return Error::none();
}

inline TensorBytes ModelFile::bytes(int index) const {
  return detail::tensor_bytes(&tensor(index), base_, model_->format_version());
}

}  // namespace moe
