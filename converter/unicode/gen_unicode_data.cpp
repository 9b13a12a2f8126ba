// Writes unicode_data.inc: the Unicode tables a BPE tokenizer carries in its .moe file
// (general category, White_Space, NFC), computed from utf8proc, never written by hand.
// The build regenerates it where utf8proc is installed and fails if the committed copy
// differs (cmake --build <dir> --target regenerate_unicode_data to refresh it).
//   gen_unicode_data OUT.inc
#include <utf8proc.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "moe/text/unicode.hpp"

namespace {

static_assert(static_cast<int>(moe::text::kLu) == UTF8PROC_CATEGORY_LU &&
                  static_cast<int>(moe::text::kNd) == UTF8PROC_CATEGORY_ND &&
                  static_cast<int>(moe::text::kZs) == UTF8PROC_CATEGORY_ZS &&
                  static_cast<int>(moe::text::kCo) == UTF8PROC_CATEGORY_CO,
              "moe::text::Category must number the general categories as utf8proc does");

using moe::text::kBlockSize;
using moe::text::kCodePoints;

std::vector<int32_t> nfd(int32_t cp) {
  utf8proc_int32_t buf[32];
  int last = 0;
  const utf8proc_ssize_t n = utf8proc_decompose_char(cp, buf, 32, UTF8PROC_DECOMPOSE, &last);
  return std::vector<int32_t>(buf, buf + (n > 0 ? n : 0));
}

std::vector<int32_t> nfc(const std::vector<int32_t>& cps) {
  std::string s;
  for (const int32_t cp : cps) {
    utf8proc_uint8_t b[4];
    s.append(reinterpret_cast<char*>(b), static_cast<size_t>(utf8proc_encode_char(cp, b)));
  }
  utf8proc_uint8_t* out = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str()));
  std::vector<int32_t> r;
  for (utf8proc_ssize_t at = 0,
                        n = static_cast<utf8proc_ssize_t>(std::char_traits<char>::length(reinterpret_cast<char*>(out)));
       at < n;) {
    utf8proc_int32_t cp;
    at += utf8proc_iterate(out + at, n - at, &cp);
    r.push_back(cp);
  }
  std::free(out);
  return r;
}

// Is NFC of `cps` the one code point `cp`?
bool nfc_is(const std::vector<int32_t>& cps, int32_t cp) {
  const std::vector<int32_t> r = nfc(cps);
  return r.size() == 1 && r[0] == cp;
}

bool hangul_syllable(int32_t cp) { return cp >= 0xac00 && cp < 0xac00 + 11172; }

template <class T>
void array(FILE* f, const char* type, const char* name, const std::vector<T>& v) {
  std::fprintf(f, "inline constexpr %s %s[%zu] = {", type, name, v.size() ? v.size() : 1);
  for (size_t i = 0; i < v.size(); ++i)
    std::fprintf(f, "%s%llu", i == 0 ? "\n  " : i % 24 == 0 ? ",\n  " : ",", static_cast<unsigned long long>(v[i]));
  std::fprintf(f, "%s};\n", v.empty() ? "0" : "");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return std::fprintf(stderr, "usage: gen_unicode_data OUT.inc\n"), 2;
  std::vector<uint8_t> props(kCodePoints);
  std::vector<uint32_t> decomposed, decomposition_offsets{0}, decompositions, combining, composed;
  std::vector<uint8_t> combining_class;
  std::map<uint64_t, uint32_t> pairs;
  std::vector<bool> second(kCodePoints);
  for (int32_t cp = 0; cp < static_cast<int32_t>(kCodePoints); ++cp) {
    const utf8proc_property_t* p = utf8proc_get_property(cp);
    uint8_t v = static_cast<uint8_t>(utf8proc_category(cp));
    const bool space = (cp >= 9 && cp <= 13) || cp == 0x85 || v == UTF8PROC_CATEGORY_ZS || v == UTF8PROC_CATEGORY_ZL ||
                       v == UTF8PROC_CATEGORY_ZP;
    if (space) v |= moe::text::kSpaceBit;
    if (p->combining_class != 0) {
      combining.push_back(static_cast<uint32_t>(cp));
      combining_class.push_back(static_cast<uint8_t>(p->combining_class));
    }
    props[static_cast<size_t>(cp)] = v;
    if (hangul_syllable(cp) || (cp >= 0xd800 && cp <= 0xdfff)) continue;
    const std::vector<int32_t> d = nfd(cp);
    if (d.size() == 1 && d[0] == cp) continue;  // no decomposition
    props[static_cast<size_t>(cp)] |= moe::text::kDecomposesBit;
    decomposed.push_back(static_cast<uint32_t>(cp));
    for (const int32_t x : d) decompositions.push_back(static_cast<uint32_t>(x));
    decomposition_offsets.push_back(static_cast<uint32_t>(decompositions.size()));
    // A primary composite: NFC gives it back; its pair is (the composite of all but the
    // last code point of its decomposition, that last one).
    if (d.size() < 2 || !nfc_is({cp}, cp)) continue;
    const std::vector<int32_t> head = nfc(std::vector<int32_t>(d.begin(), d.end() - 1));
    if (head.size() != 1) continue;
    if (!nfc_is({head[0], d.back()}, cp)) continue;
    pairs[static_cast<uint64_t>(head[0]) << 32 | static_cast<uint32_t>(d.back())] = static_cast<uint32_t>(cp);
    second[static_cast<size_t>(d.back())] = true;
  }
  for (int32_t cp = 0; cp < static_cast<int32_t>(kCodePoints); ++cp) {
    const bool jamo_vt = (cp >= 0x1161 && cp <= 0x1175) || (cp >= 0x11a8 && cp <= 0x11c2);
    const bool changes = (cp < 0xd800 || cp > 0xdfff) && !nfc_is({cp}, cp);
    if (utf8proc_get_property(cp)->combining_class != 0 || second[static_cast<size_t>(cp)] || jamo_vt || changes)
      props[static_cast<size_t>(cp)] |= moe::text::kNfcBit;
  }
  // Blocks of 128 code points, each distinct block stored once.
  std::vector<uint16_t> index;
  std::vector<uint8_t> blocks;
  for (uint32_t b = 0; b < kCodePoints / kBlockSize; ++b) {
    const uint8_t* block = props.data() + size_t{b} * kBlockSize;
    size_t found = blocks.size() / kBlockSize;
    for (size_t i = 0; i < blocks.size() / kBlockSize && found == blocks.size() / kBlockSize; ++i)
      if (std::memcmp(blocks.data() + i * kBlockSize, block, kBlockSize) == 0) found = i;
    if (found == blocks.size() / kBlockSize) blocks.insert(blocks.end(), block, block + kBlockSize);
    index.push_back(static_cast<uint16_t>(found));
  }
  std::vector<uint64_t> compositions;
  for (const auto& [k, v] : pairs) compositions.push_back(k), composed.push_back(v);

  FILE* f = std::fopen(argv[1], "w");
  if (f == nullptr) return std::perror(argv[1]), 1;
  std::fprintf(f,
               "// Generated by converter/unicode/gen_unicode_data.cpp from utf8proc %s (Unicode %s). Do not edit.\n",
               utf8proc_version(), utf8proc_unicode_version());
  std::fprintf(f, "inline constexpr char kUnicodeVersion[] = \"%s\";\n", utf8proc_unicode_version());
  array(f, "uint16_t", "kBlockIndex", index);
  array(f, "uint8_t", "kBlocks", blocks);
  array(f, "uint32_t", "kDecomposed", decomposed);
  array(f, "uint32_t", "kDecompositionOffsets", decomposition_offsets);
  array(f, "uint32_t", "kDecompositions", decompositions);
  array(f, "uint32_t", "kCombining", combining);
  array(f, "uint8_t", "kCombiningClass", combining_class);
  array(f, "uint64_t", "kCompositions", compositions);
  array(f, "uint32_t", "kComposed", composed);
  if (std::fclose(f) != 0) return std::perror(argv[1]), 1;
  std::printf("%zu blocks, %zu decompositions, %zu combining, %zu compositions\n", blocks.size() / kBlockSize,
              decomposed.size(), combining.size(), compositions.size());
  return 0;
}
