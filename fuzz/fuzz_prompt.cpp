// Fuzz target: prompt text as untrusted input, through the char tokenizer, for the
// makemoe-tiny fixture's vocabulary (ASCII) and the same with multi-byte characters
// added. Invariants: encode either fails with a message or yields ids inside the
// vocabulary that decode back to exactly the input bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "converter/checkpoint_writer.hpp"
#include "fuzz_support.hpp"
#include "moe/tokenizer.hpp"

namespace {

std::vector<uint32_t> fixture_chars() {
  std::ifstream in(MOE_SOURCE_DIR "/tests/fixtures/makemoe-tiny/tokenizer.json");
  return moe::converter::chars_from_utf8(nlohmann::json::parse(in).at("chars").get<std::string>(),
                                         "the fixture's tokenizer");
}

void check(const moe::CharTokenizer& tok, const char* text, size_t len) {
  int32_t ids[64];
  int n = 0;
  if (tok.encode(text, len, ids, 64, n)) return;
  std::string back;
  for (int i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= tok.size()) moe::fuzz::invariant_broken("token id outside the vocabulary");
    char buf[4];
    back.append(buf, static_cast<size_t>(tok.decode(ids[i], buf)));
  }
  if (back.size() != len || std::memcmp(back.data(), text, len) != 0)
    moe::fuzz::invariant_broken("decode(encode(text)) != text");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<uint32_t> ascii = fixture_chars();
  static const std::vector<uint32_t> wide = [] {
    std::vector<uint32_t> v = fixture_chars();
    v.insert(v.end(), {0xe9, 0x20ac, 0x4e2d, 0x1f600, 0x10ffff});  // é € 中 😀 and the last code point
    return v;
  }();
  const char* text = reinterpret_cast<const char*>(data);  // libFuzzer's exact-size buffer: ASan sees overreads
  check(moe::CharTokenizer(ascii.data(), static_cast<int>(ascii.size())), text, size);
  check(moe::CharTokenizer(wide.data(), static_cast<int>(wide.size())), text, size);
  return 0;
}
