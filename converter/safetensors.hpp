// Reading and writing safetensors (huggingface/safetensors format): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
// then the raw little-endian tensor bytes. Shards are joined through
// model.safetensors.index.json. Every size and offset is checked before use.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "platform/mapped_file.hpp"

namespace moe::converter {

struct SafetensorInfo {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", ... as the file says
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapped file
  size_t bytes = 0;
  std::filesystem::path file;

  int64_t elements() const;
  std::string shape_text() const;  // "[96, 64]"
};

// One .safetensors file, mapped read-only.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);  // throws InputError
  const std::map<std::string, SafetensorInfo>& tensors() const { return tensors_; }

 private:
  MappedFile map_;
  std::map<std::string, SafetensorInfo> tensors_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards named by
// model.safetensors.index.json.
class TensorStore {
 public:
  explicit TensorStore(const std::filesystem::path& dir);  // throws InputError
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const SafetensorInfo& info(const std::string& name) const;  // throws when missing
  std::vector<std::string> names() const;
  // The tensor as f32, converted from F32, F16 or BF16; throws for other dtypes.
  std::vector<float> read_f32(const std::string& name) const;
  // Elements [offset, offset + count) of the flattened tensor, likewise (the caller
  // checked the range against its shape).
  std::vector<float> read_f32(const std::string& name, int64_t offset, int64_t count) const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorInfo*> index_;
};

// A tensor to write. Data is little-endian bytes of `dtype` ("F32" here; "F16"/"BF16"
// are accepted too, for tests of the reader).
struct SafetensorOut {
  std::string name;
  std::string dtype = "F32";
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

SafetensorOut f32_tensor(std::string name, std::vector<int64_t> shape, const float* values);

// A tensor's entry in a file's header, for writers that stream the data after it.
struct SafetensorEntry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
};
// The 8-byte length and the JSON header of a file holding these tensors' data in this
// order, padded so the data starts 8-byte aligned.
std::vector<uint8_t> encode_safetensors_header(const std::vector<SafetensorEntry>& entries,
                                               const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
// f32 values as the bytes of dtype "F32", "F16" or "BF16" (round to nearest even).
void append_as_dtype(const float* values, size_t n, const std::string& dtype, std::vector<uint8_t>& out);

// The file's bytes (header + data), tensors in the given order.
std::vector<uint8_t> encode_safetensors(const std::vector<SafetensorOut>& tensors,
                                        const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
// Writes them crash-safely (temp file + rename).
void write_safetensors(const std::filesystem::path& path, const std::vector<SafetensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

int safetensors_dtype_size(const std::string& dtype);  // 0 for unknown dtypes

}  // namespace moe::converter
