// Fuzz target: a checkpoint directory as untrusted input — config.json (both layouts),
// tokenizer.json and the safetensors header and data. The input is the three files
// joined by kSeparator (fuzz/make_seeds.sh writes seeds so); each is written to a
// private directory and the real moe_convert path runs on it.
// Invariants: the only failure is a InputError (a clear message), and whatever the
// converter writes, the .moe verifier accepts.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "converter/input_error.hpp"
#include "converter/converter.hpp"
#include "fuzz_support.hpp"
#include "moe/model_file.hpp"

namespace {

constexpr std::string_view kSeparator = "\n#moe-fuzz-next-file#\n";

const std::filesystem::path& work_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("moe_fuzz_checkpoint_" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

void put(const std::filesystem::path& path, std::string_view bytes, bool present) {
  std::filesystem::remove(path);
  if (!present) return;
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string_view part[3];
  bool present[3] = {};
  for (int i = 0; i < 3; ++i) {
    const size_t cut = i < 2 ? in.find(kSeparator) : std::string_view::npos;
    part[i] = in.substr(0, cut);
    present[i] = !part[i].empty() || cut != std::string_view::npos;
    in = cut == std::string_view::npos ? std::string_view{} : in.substr(cut + kSeparator.size());
  }
  const auto& dir = work_dir();
  put(dir / "config.json", part[0], present[0]);
  put(dir / "tokenizer.json", part[1], present[1] && !part[1].empty());
  put(dir / "model.safetensors", part[2], present[2]);

  moe::converter::ConvertOptions options;
  options.recipe.group_size = (size & 1) ? 4 : 0;  // both int8 scale layouts
  moe::converter::Conversion c;
  try {
    c = moe::converter::convert_checkpoint(dir, options);
  } catch (const moe::InputError&) {
    return 0;  // refused with a message: the expected outcome for most inputs
  }
  const moe::fuzz::AlignedCopy moe_file(c.bytes.data(), c.bytes.size());
  moe::ModelFile file;
  if (moe::Error e = moe::ModelFile::open(moe_file.data(), moe_file.size(), file)) {
    std::fprintf(stderr, "%s\n", e.what());
    moe::fuzz::invariant_broken("the converter wrote a file the verifier refuses");
  }
  return 0;
}
