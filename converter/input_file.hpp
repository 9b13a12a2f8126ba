// What the host tools read from the user: regular files only (a FIFO, a device or a
// directory is refused with its name, never opened blocking), bounded in size before a
// byte is read, and, while a RecordInputs is alive (each tool's main holds one), recorded
// as inputs of the run, so that no output written through AtomicFile can replace one of
// them (compared by device and inode: another name for the same file is still refused).
#pragma once

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace moe::converter {

// Caps, named so a message can say which one a file broke.
inline constexpr size_t kMaxJsonBytes = size_t{64} << 20;          // config.json, tokenizer.json, the shard index
inline constexpr size_t kMaxSafetensorsHeader = size_t{16} << 20;  // real checkpoints' headers are < 2 MB

// Inputs are recorded while one of these lives: a tool's run. A library caller that means
// to rewrite what it read (a test editing a checkpoint) simply holds none.
class RecordInputs {
 public:
  RecordInputs();
  ~RecordInputs();
  RecordInputs(const RecordInputs&) = delete;
  RecordInputs& operator=(const RecordInputs&) = delete;
};

// The whole file, recorded as an input; throws InputError naming it when it is not a
// regular file, cannot be read or is larger than max_bytes (`what`: "corpus", "recipe",
// the file's role in messages).
std::string read_input_file(const std::filesystem::path& path, size_t max_bytes, const std::string& what);
// The same without recording it: for a file the run itself replaces (moe_train's state).
std::string read_regular_file(const std::filesystem::path& path, size_t max_bytes, const std::string& what);

// A JSON file (config.json, tokenizer.json, ...) read as above, within kMaxJsonBytes, and
// parsed; throws InputError naming it when it is not JSON.
nlohmann::json read_json_file(const std::filesystem::path& path);

// Records a file read another way (a mapped safetensors file) as an input.
void note_input(const std::filesystem::path& path);

// The input that `path` (followed through symlinks) is, or "" when it is none.
std::string input_at(const std::filesystem::path& path);

}  // namespace moe::converter
