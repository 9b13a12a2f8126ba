#include "converter/converter.hpp"

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <new>

#include "converter/converter_parts.hpp"
#include "converter/input_error.hpp"
#include "converter/quantize.hpp"
#include "moe/crc32c.hpp"
#include "moe/model_file.hpp"
#include "moe_model_generated.h"
#include "platform/mapped_file.hpp"
#include "tools/number_format.hpp"

#ifndef MOE_VERSION
#define MOE_VERSION "dev"
#endif

namespace moe::converter {

DType QuantRecipe::dtype_for(TensorClass c) const {
  switch (c) {
    case TensorClass::expert: return experts;
    case TensorClass::attention: return attention;
    case TensorClass::embedding: return embeddings;
    case TensorClass::f32_only: return DType::f32;
  }
  return DType::f32;
}

DType QuantRecipe::dtype_for(const TensorSpec& s) const {
  const DType d = dtype_for(s.klass);
  return d == DType::q4 && (!s.is_matrix() || s.cols % kQ4Block != 0) ? DType::i8 : d;
}

std::string QuantRecipe::describe() const {
  auto d = [&](DType t) {
    std::string s = dtype_name(t);
    if (t == DType::i8) s += group_size > 0 ? "/g" + std::to_string(group_size) : "/row";
    if (t == DType::q4) s += "/g32";
    return s;
  };
  return "experts=" + d(experts) + " attention=" + d(attention) + " embeddings=" + d(embeddings);
}

DType parse_dtype(const std::string& text, const char* option) {
  if (text == "int8" || text == "i8") return DType::i8;
  if (text == "int4" || text == "q4") return DType::q4;
  if (text == "fp16" || text == "f16") return DType::f16;
  if (text == "fp32" || text == "f32") return DType::f32;
  throw InputError(std::string(option) + ": '" + text + "' is not one of int4, int8, fp16, fp32");
}

namespace {

// .moe files are FlatBuffers: 32-bit offsets cap them at 2 GiB.
constexpr size_t kMaxFileBytes = (size_t{1} << 31) - (size_t{1} << 20);

}  // namespace

static std::string provenance_source(const std::filesystem::path& dir) {
  std::error_code ec;
  auto abs = std::filesystem::weakly_canonical(dir, ec);
  return ec ? dir.string() : abs.string();
}

namespace {

// The loader's own verification of the finished file (in a 64-byte aligned copy, as the
// engine reads it): the converter can never publish a file the engine would refuse.
void verify_as_the_engine_would(const std::vector<uint8_t>& bytes) {
  const std::unique_ptr<uint8_t[], void (*)(uint8_t*)> aligned(
      new (std::align_val_t(kTensorAlignment)) uint8_t[bytes.size()],
      [](uint8_t* p) { ::operator delete[](p, std::align_val_t(kTensorAlignment)); });
  std::memcpy(aligned.get(), bytes.data(), bytes.size());
  ModelFile file;
  if (Error e = ModelFile::open(aligned.get(), bytes.size(), file))
    throw InputError(std::string("the converted model would not load, so nothing was written: ") + e.what());
}

}  // namespace

namespace detail {
bool stores_q4(const ModelConfig& config, const QuantRecipe& recipe) {
  bool any = false;
  for_each_tensor_spec(config, [&](const TensorSpec& s) { any = any || recipe.dtype_for(s) == DType::q4; });
  return any;
}
}  // namespace detail

ConversionBudget conversion_budget(const ModelConfig& config, const QuantRecipe& recipe) {
  ConversionBudget b;
  double largest = 0;
  for_each_tensor_spec(config, [&](const TensorSpec& s) {
    const DType d = recipe.dtype_for(s);
    const double n = static_cast<double>(s.elements());
    double bytes =
        static_cast<double>(data_bytes(d, static_cast<uint64_t>(s.elements()))) + 128;  // + alignment, fields
    if (d == DType::i8) {
      const int cols = s.is_matrix() ? s.cols : 1;
      const int g = recipe.group_size > 0 && cols % recipe.group_size == 0 ? recipe.group_size : cols;
      bytes += static_cast<double>(s.rows) * (cols / g) * sizeof(float);
    }
    b.file_bytes += bytes;
    b.params += s.elements();
    ++b.tensors;
    largest = std::max(largest, n);
  });
  b.peak_memory_bytes = 2 * b.file_bytes + largest * (2 * sizeof(float) + 1);
  b.streaming_peak_memory_bytes = largest * (3 * sizeof(float) + 1) + 64e6;  // + metadata and the program
  return b;
}

void check_conversion_budget(const ModelConfig& config, const QuantRecipe& recipe, double memory_bytes,
                             bool streaming) {
  if (memory_bytes <= 0) memory_bytes = physical_memory_bytes();
  ConversionBudget b = conversion_budget(config, recipe);
  if (streaming) b.peak_memory_bytes = b.streaming_peak_memory_bytes;
  const auto gb = [](double bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.2f GB", bytes / 1e9);
    return std::string(text);
  };
  const std::string model = std::string("config.json describes a model of ") +
                            tools::grouped(static_cast<long long>(b.params)) + " parameters in " +
                            tools::grouped(static_cast<long long>(b.tensors)) + " tensors (" +
                            ConfigKey(config).c_str() + ")";
  constexpr double kFormatLimit = FLATBUFFERS_MAX_BUFFER_SIZE;
  if (!streaming && b.file_bytes >= kFormatLimit) {
    const QuantRecipe all_int8{DType::i8, DType::i8, DType::i8, 0};
    const ConversionBudget small = conversion_budget(config, all_int8);
    throw InputError(
        model + ": as " + recipe.describe() + " its .moe file would take " + gb(b.file_bytes) +
        ", over the format's limit of " + gb(kFormatLimit) +
        (small.file_bytes < kFormatLimit
             ? "; with --experts int8 --attention int8 --embeddings int8 it would take " + gb(small.file_bytes)
             : "; even all-int8 it would take " + gb(small.file_bytes) +
                   ", so this format version cannot hold it (no recipe helps)"));
  }
  if (b.peak_memory_bytes > memory_bytes)
    throw InputError(model + ": converting it needs about " + gb(b.peak_memory_bytes) + " of memory (the " +
                     gb(b.file_bytes) + " file is built and verified in memory), and this machine has " +
                     gb(memory_bytes));
}

Conversion convert_checkpoint(const std::filesystem::path& dir, const ConvertOptions& options) {
  return detail::convert_in_memory(open_checkpoint(dir, options.max_context, options.capacity_factor), options);
}

namespace detail {

std::string describe_tokenizer(const Checkpoint& ck) {
  if (ck.bpe) {
    const BpeTokenizerTables& t = *ck.bpe;
    std::string s = t.byte_level ? "byte-level BPE, " : "SentencePiece-style BPE, ";
    s.append(tools::grouped(t.size())).append(" tokens (").append(std::to_string(t.added.size()));
    s.append(" added)");
    if (t.chat != fb::ChatTemplate_None) s.append(", chat format ").append(fb::EnumNameChatTemplate(t.chat));
    return s;
  }
  if (!ck.chars.empty()) return "char, " + std::to_string(ck.chars.size()) + " characters";
  return "none: the model takes token ids";
}

Conversion begin_conversion(const Checkpoint& ck, const QuantRecipe& recipe) {
  if (recipe.group_size < 0) throw InputError("--group-size must be >= 0 (0: one scale per row)");
  Conversion out;
  out.config = ck.config;
  out.source_format = ck.layout->name;
  out.recipe = recipe.describe();
  out.tokenizer = describe_tokenizer(ck);
  out.capacity_factor = ck.constants.capacity_factor;
  out.notes = ck.notes;
  const std::vector<std::string> unused = ck.unused_tensors();
  if (!unused.empty()) {
    std::string list;
    for (size_t i = 0; i < unused.size() && i < 4; ++i) list += (i ? ", " : "") + unused[i];
    if (unused.size() > 4) list += ", ...";
    out.notes.push_back("ignored " + std::to_string(unused.size()) +
                        " checkpoint tensor(s) not used for inference: " + list);
  }
  return out;
}

void tally(std::map<int, ClassReport>& classes, const TensorSpec& spec, DType dtype, size_t stored_bytes,
           bool first_use) {
  ClassReport& cr = classes[static_cast<int>(spec.klass)];
  cr.klass = spec.klass;
  cr.dtype = dtype;
  cr.tensors += 1;
  if (first_use) {
    cr.bytes += stored_bytes;
    cr.f32_bytes += static_cast<size_t>(spec.elements()) * 4;
  }
}

void finish_conversion(Conversion& out, const std::map<int, ClassReport>& classes, int ungrouped,
                       const QuantRecipe& recipe, const ModelConfig& config) {
  int int4_as_int8 = 0;
  for_each_tensor_spec(config, [&](const TensorSpec& s) {
    int4_as_int8 += recipe.dtype_for(s.klass) == DType::q4 && recipe.dtype_for(s) != DType::q4;
  });
  if (int4_as_int8 > 0)
    out.notes.push_back(std::to_string(int4_as_int8) +
                        " tensor(s) have a column count not divisible by 32 (int4's blocks): they are stored int8");
  if (ungrouped > 0)
    out.notes.push_back(std::to_string(ungrouped) +
                        " int8 tensor(s) have a column count not divisible by --group-size " +
                        std::to_string(recipe.group_size) + ": they use one scale per row");
  for (const auto& kv : classes) out.classes.push_back(kv.second);
}

Conversion convert_in_memory(const Checkpoint& ck, const ConvertOptions& options) {
  const ModelConfig& cfg = ck.config;
  const QuantRecipe& recipe = options.recipe;
  Conversion out = begin_conversion(ck, recipe);
  check_conversion_budget(cfg, recipe);  // before any tensor is named or read (in memory: at most 2 GiB)

  // A tensor stored once: its data and scales in the file, checksum and group.
  struct Stored {
    flatbuffers::Offset<flatbuffers::Vector<uint8_t>> data;
    flatbuffers::Offset<flatbuffers::Vector<float>> scales;
    uint32_t crc = 0;
    int group_size = 0;
  };
  flatbuffers::FlatBufferBuilder fbb(1 << 20);
  std::map<std::string, Stored> shared;  // share_key -> where its bytes are
  std::map<int, ClassReport> classes;
  std::vector<flatbuffers::Offset<fb::Tensor>> tensors;
  size_t payload = 0;
  int ungrouped = 0;

  for_each_tensor_spec(cfg, [&](const TensorSpec& spec) {
    const std::vector<TensorSource> sources = ck.sources(spec);
    const std::string name = stored_name(sources);
    const DType dtype = recipe.dtype_for(spec);
    // A source tensor already stored in this dtype (tied embeddings) is referenced: not
    // read, quantized or copied again.
    auto [stored, first_use] = shared.try_emplace(share_key(sources[0], dtype));
    size_t bytes = 0;
    if (first_use) {
      const int rows = spec.is_matrix() ? spec.rows : 1, cols = spec.is_matrix() ? spec.cols : spec.rows;
      const Quantized q =
          quantize(ck.load(spec), rows, cols, dtype, recipe.group_size, name, recipe.q4_rule, options.workers);
      if (dtype == DType::i8 && recipe.group_size > 0 && q.group_size != recipe.group_size) ++ungrouped;
      bytes = q.data.size() + q.scales.size() * sizeof(float);
      payload += bytes;
      if (payload > kMaxFileBytes)
        throw InputError(
            "the converted model would exceed 2 GiB, the limit of the .moe format: use int8 or fp16 for more tensor "
            "classes");
      Stored& st = stored->second;
      st.crc = crc32c(q.data.data(), q.data.size());
      if (!q.scales.empty()) st.crc = crc32c_update(st.crc, q.scales.data(), q.scales.size() * sizeof(float));
      st.group_size = q.group_size;
      fbb.ForceVectorAlignment(q.data.size(), 1, kTensorAlignment);
      st.data = fbb.CreateVector(q.data);
      if (!q.scales.empty()) {
        fbb.ForceVectorAlignment(q.scales.size(), sizeof(float), kTensorAlignment);
        st.scales = fbb.CreateVector(q.scales);
      }
    }
    const Stored& st = stored->second;
    const auto name_off = fbb.CreateString(name);
    const std::vector<uint32_t> shape =
        spec.is_matrix() ? std::vector<uint32_t>{static_cast<uint32_t>(spec.rows), static_cast<uint32_t>(spec.cols)}
                         : std::vector<uint32_t>{static_cast<uint32_t>(spec.rows)};
    const auto shape_off = fbb.CreateVector(shape);
    fb::TensorBuilder tb(fbb);
    tb.add_name(name_off);
    tb.add_role(static_cast<fb::TensorRole>(spec.role));
    tb.add_layer(static_cast<int16_t>(spec.layer));
    tb.add_expert(static_cast<int16_t>(spec.expert));
    tb.add_dtype(static_cast<fb::DType>(dtype));
    tb.add_shape(shape_off);
    tb.add_data(st.data);
    if (!st.scales.IsNull()) tb.add_scales(st.scales);
    tb.add_group_size(static_cast<uint32_t>(st.group_size));
    tb.add_crc32c(st.crc);
    tensors.push_back(tb.Finish());
    tally(classes, spec, dtype, bytes, first_use);
  });
  finish_conversion(out, classes, ungrouped, recipe, cfg);

  const auto tensors_off = fbb.CreateVector(tensors);
  out.format_version =
      required_format_version(cfg, ck.constants, ck.bpe != nullptr, false, detail::stores_q4(cfg, recipe));
  fb::FinishSizePrefixedModelBuffer(fbb, create_model(fbb, ck, recipe, out.format_version, tensors_off));
  out.bytes.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  out.file_bytes = out.bytes.size();
  verify_as_the_engine_would(out.bytes);
  return out;
}

std::string stored_name(const std::vector<TensorSource>& sources) {
  const TensorSource& first = sources[0];
  int64_t whole = 1;
  for (int64_t d : first.shape) whole *= d;
  if (sources.size() > 1) return first.name + " (+" + std::to_string(sources.size() - 1) + " more, concatenated)";
  if (first.count != whole)
    return first.name + " (elements " + std::to_string(first.offset) + ".." +
           std::to_string(first.offset + first.count - 1) + ")";
  return first.name;
}

std::string share_key(const TensorSource& first, DType dtype) {
  return first.name + "@" + std::to_string(first.offset) + "|" + dtype_name(dtype);
}

flatbuffers::Offset<fb::Model> create_model(
    flatbuffers::FlatBufferBuilder& fbb, const Checkpoint& ck, const QuantRecipe& recipe, uint32_t version,
    flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Tensor>>> tensors) {
  const ModelConfig& cfg = ck.config;
  flatbuffers::Offset<fb::Tokenizer> tok_off;
  if (ck.bpe) {
    tok_off = write_bpe_tokenizer(fbb, *ck.bpe);
  } else {
    const auto chars_off =
        ck.chars.empty() ? flatbuffers::Offset<flatbuffers::Vector<uint32_t>>() : fbb.CreateVector(ck.chars);
    fb::TokenizerBuilder tok(fbb);
    tok.add_kind(ck.chars.empty() ? fb::TokenizerKind_None : fb::TokenizerKind_Char);
    if (!ck.chars.empty()) tok.add_chars(chars_off);
    tok_off = tok.Finish();
  }
  const auto prov_off = fb::CreateProvenanceDirect(fbb, provenance_source(ck.dir).c_str(), ck.layout->name, MOE_VERSION,
                                                   recipe.describe().c_str());
  const ModelConstants& k = ck.constants;
  const auto cfg_off = fb::CreateConfig(
      fbb, static_cast<fb::Family>(cfg.family), static_cast<uint32_t>(cfg.d_model), static_cast<uint32_t>(cfg.n_layers),
      static_cast<uint32_t>(cfg.n_heads), static_cast<uint32_t>(cfg.n_kv_heads), static_cast<uint32_t>(cfg.head_dim),
      static_cast<uint32_t>(cfg.n_experts), static_cast<uint32_t>(cfg.top_k), static_cast<uint32_t>(cfg.expert_hidden),
      static_cast<uint32_t>(cfg.vocab_size), static_cast<uint32_t>(cfg.max_context), k.rope_theta, k.norm_eps,
      static_cast<fb::AttentionScale>(k.attention_scale), k.bos_token_id, k.eos_token_id, k.capacity_factor,
      static_cast<fb::QkNorm>(cfg.qk_norm), cfg.qkv_bias, static_cast<uint32_t>(cfg.shared_expert_hidden),
      static_cast<uint32_t>(cfg.dense_hidden), cfg.dense_layers, k.attention_multiplier,
      static_cast<fb::RouterWeights>(k.router_weights), k.clip_qkv, k.embedding_multiplier, k.residual_multiplier,
      k.logits_scaling);
  return fb::CreateModel(fbb, version, cfg_off, tok_off, prov_off, tensors);
}

}  // namespace detail

std::string format_report(const Conversion& c) {
  std::string s;
  char line[256];
  const double total = static_cast<double>(c.file_bytes);
  std::snprintf(line, sizeof line, "%-22s %-6s %8s %14s %7s\n", "tensor class", "dtype", "tensors", "bytes", "share");
  s += line;
  size_t payload = 0, f32 = 0;
  for (const ClassReport& r : c.classes) {
    std::snprintf(line, sizeof line, "%-22s %-6s %8d %14s %6.1f%%\n", class_name(r.klass), dtype_name(r.dtype),
                  r.tensors, tools::grouped(static_cast<long long>(r.bytes)).c_str(),
                  100.0 * static_cast<double>(r.bytes) / total);
    s += line;
    payload += r.bytes;
    f32 += r.f32_bytes;
  }
  const size_t other = c.file_bytes - std::min<size_t>(payload, c.file_bytes);
  std::snprintf(line, sizeof line, "%-22s %-6s %8s %14s %6.1f%%\n", "metadata+alignment", "", "",
                tools::grouped(static_cast<long long>(other)).c_str(), 100.0 * static_cast<double>(other) / total);
  s += line;
  std::snprintf(line, sizeof line, "%-22s %-6s %8s %14s %6.1f%%\n", "total", "", "",
                tools::grouped(static_cast<long long>(c.file_bytes)).c_str(), 100.0);
  s += line;
  std::snprintf(line, sizeof line, "compression vs fp32 weights (%s bytes): %.2fx\n",
                tools::grouped(static_cast<long long>(f32)).c_str(), static_cast<double>(f32) / total);
  s += line;
  return s;
}

}  // namespace moe::converter
