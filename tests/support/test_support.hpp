// Shared helpers for the test suites: fixture paths, reference.json, converting a
// fixture in-process into a 64-byte-aligned .moe buffer, temp directories.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "converter/converter.hpp"
#include "converter/safetensors.hpp"
#include "moe/model_file.hpp"

namespace moe::test {

std::filesystem::path source_dir();                          // the repository root
std::filesystem::path fixture_dir(const std::string& name);  // tests/fixtures/<name>

struct ReferenceCase {
  std::string prompt;  // makeMoE cases only
  std::vector<int32_t> input_ids;
  std::vector<std::vector<float>> logits;  // one row per position the reference computed
  std::vector<int32_t> greedy;
};
std::vector<ReferenceCase> load_reference(const std::string& fixture);

// Bytes at a 64-byte-aligned address, as a mapped file would be.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(const std::vector<uint8_t>& bytes) : AlignedBuffer(bytes.data(), bytes.size()) {}
  AlignedBuffer(const void* data, size_t n);
  uint8_t* data() { return ptr_.get(); }
  const uint8_t* data() const { return ptr_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> ptr_;
  size_t size_ = 0;
};

converter::QuantRecipe fp32_recipe();
converter::QuantRecipe recipe(DType experts, DType attention = DType::f32, DType embeddings = DType::f32,
                              int group = 32);

// moe_convert's library on a fixture, in-process.
AlignedBuffer convert_fixture(const std::string& fixture, const converter::QuantRecipe& recipe);

// A fresh directory under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Copies a fixture checkpoint into a fresh temp dir (for tests that modify it).
void copy_dir(const std::filesystem::path& from, const std::filesystem::path& to);

// Runs a program (argv[0] a path) and collects its exit code and output.
// run_program_killed_after sends it SIGKILL after that many microseconds unless it has
// ended by then (for the crash-safety tests); 0 waits for it however long it runs.
// on_first_output, if given, is called once, as soon as the program has written to stdout
// (a step taken at a known point of its run, not after a guessed delay).
struct ProgramResult {
  int code = -1;  // exit status, or 128 + signal
  std::string out, err;
  bool killed() const { return code == 128 + 9; }
};
ProgramResult run_program(std::vector<std::string> argv);
ProgramResult run_program_killed_after(std::vector<std::string> argv, long kill_after_us,
                                       const std::function<void()>& on_first_output = {});
std::string read_file(const std::filesystem::path& path);

// The tiny Shakespeare corpus shipped with the project, and makeMoE's split.
std::string shakespeare_text();
std::string shakespeare_val_split();  // the last 10% of characters

// A checkpoint directory converted with every tensor in f32 (max_context > 0 overrides).
converter::Conversion convert_fp32(const std::filesystem::path& dir, int max_context = 0);
// Expects convert_fp32(dir) to refuse with an InputError whose message contains `text`.
void expect_conversion_refusal(const std::filesystem::path& dir, const std::string& text);
// max |got - want| / max |want| over a row of want.size() values.
double relative_error(const float* got, const std::vector<float>& want);

// An editable copy of a fixture checkpoint: config and tensors (as F32); write() saves
// both back into the copy and returns its directory.
struct EditableCheckpoint {
  TempDir tmp;
  nlohmann::json config;
  std::vector<converter::SafetensorOut> tensors;

  explicit EditableCheckpoint(const std::string& fixture);
  converter::SafetensorOut& tensor(const std::string& name);
  void remove(const std::string& name);
  float* values(const std::string& name) { return reinterpret_cast<float*>(tensor(name).data.data()); }
  const std::filesystem::path& write();
};

}  // namespace moe::test
