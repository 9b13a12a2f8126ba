// Checkpoint directory -> .moe bytes: the library behind moe_convert.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "converter/checkpoint.hpp"
#include "converter/quantize.hpp"
#include "moe/model_layout.hpp"
#include "moe/tensor.hpp"

namespace moe::converter {

// Which dtype each tensor class is stored in. Norms, biases and routers are always f32.
// The defaults follow bench/README.md's tables ("Choosing the default recipe"): at real
// size decode is bound by the bytes each token reads, and int4 experts with int8
// attention and embeddings read the fewest for a held-out loss equal to fp32's.
struct QuantRecipe {
  DType experts = DType::q4;
  DType attention = DType::i8;
  DType embeddings = DType::i8;
  // int8 columns per scale; 0: one scale per row, the default: it decodes faster than
  // groups of 32 at equal held-out loss (bench/README.md, "Design decisions").
  int group_size = 0;
  // How int4 block scales are chosen (llama.cpp's rule only to compare against it).
  Q4Rule q4_rule = Q4Rule::least_squares;

  DType dtype_for(TensorClass c) const;
  // The dtype a tensor is stored in: its class's, except int4 for a tensor whose columns
  // are not whole blocks of 32, which is stored int8 (a conversion note counts them).
  DType dtype_for(const TensorSpec& s) const;
  std::string describe() const;  // "experts=i8/g32 attention=f16 embeddings=f16"
};

// "int4" | "q4" | "int8" | "i8" | "fp16" | "f16" | "fp32" | "f32"; throws InputError otherwise.
DType parse_dtype(const std::string& text, const char* option);

struct ConvertOptions {
  QuantRecipe recipe;
  int max_context = 0;           // > 0: override the checkpoint's context length
  double capacity_factor = -1.;  // >= 0: override the checkpoint's expert capacity (0: none)
  // convert_to_file streams files of at least this many bytes (estimated) in format
  // version 3, one tensor in memory at a time; smaller ones are built in memory (about
  // three times the file at the peak) and keep the lowest version that holds them, which
  // older engines (firmware) read. Streaming is no slower (bench/README.md, "Streaming
  // from 64 MiB").
  double stream_from_bytes = 64.0 * 1024 * 1024;
  // Threads that share each int8 and int4 tensor's quantization (moe_convert: its pool);
  // the default, none: the calling thread alone. The file is the same either way.
  Workers workers;
};

struct ClassReport {
  TensorClass klass{};
  DType dtype = DType::f32;
  int tensors = 0;
  size_t bytes = 0;      // payload: data + scales
  size_t f32_bytes = 0;  // the same tensors in f32
};

struct Conversion {
  std::vector<uint8_t> bytes;  // the .moe file (empty when it was streamed to its file)
  uint64_t file_bytes = 0;     // its size
  uint32_t format_version = 0;
  ModelConfig config{};
  std::string source_format;
  std::string recipe;
  std::string tokenizer;  // what the file's tokenizer is, for the report
  double capacity_factor = 0.;
  std::vector<ClassReport> classes;  // one per tensor class present
  std::vector<std::string> notes;
};

// What a conversion will take, from config.json alone: the .moe file's bytes (payload,
// scales, alignment) and the converter's peak memory (the file is built in memory,
// verified in a copy, and one tensor at a time is read as f32 and quantized).
struct ConversionBudget {
  long tensors = 0;
  long params = 0;
  double file_bytes = 0;
  double peak_memory_bytes = 0;
  double streaming_peak_memory_bytes = 0;  // convert_to_file's streaming path
};
ConversionBudget conversion_budget(const ModelConfig& config, const QuantRecipe& recipe);
// Refuses, with the numbers, a conversion whose file exceeds the format's limit or whose
// peak memory exceeds `memory_bytes` (this machine's, when 0). `streaming`: the file is
// written as it is made (no size limit; memory for the largest tensor only).
void check_conversion_budget(const ModelConfig& config, const QuantRecipe& recipe, double memory_bytes = 0,
                             bool streaming = false);

// In memory (format version 1 or 2; at most 2 GiB).
Conversion convert_checkpoint(const std::filesystem::path& dir, const ConvertOptions& options);
// To a file, atomically: in memory below options.stream_from_bytes, else streamed in
// format version 3 (any size; peak memory about three times the largest tensor in f32).
// Either way the file is verified as the engine will load it before it replaces `output`.
Conversion convert_to_file(const std::filesystem::path& dir, const ConvertOptions& options,
                           const std::filesystem::path& output);

// The table moe_convert prints: class, dtype, bytes, share of the file; total vs fp32.
std::string format_report(const Conversion& c);

}  // namespace moe::converter
