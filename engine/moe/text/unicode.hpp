// Unicode properties and NFC over the tables a .moe file carries (UnicodeData in the
// schema, written by moe_convert from utf8proc): the engine needs no Unicode library and
// allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>

#include "moe/text/utf8.hpp"

namespace moe::text {

// General categories, in utf8proc's numbering (the converter checks it against utf8proc).
enum Category : uint8_t {
  kCn,
  kLu,
  kLl,
  kLt,
  kLm,
  kLo,
  kMn,
  kMc,
  kMe,
  kNd,
  kNl,
  kNo,
  kPc,
  kPd,
  kPs,
  kPe,
  kPi,
  kPf,
  kPo,
  kSm,
  kSc,
  kSk,
  kSo,
  kZs,
  kZl,
  kZp,
  kCc,
  kCf,
  kCs,
  kCo,
  kCategoryCount
};
constexpr uint8_t kCategoryBits = 31;
constexpr uint8_t kSpaceBit = 32;        // Unicode White_Space (\s in tokenizer.json regexes)
constexpr uint8_t kNfcBit = 64;          // NFC may change the text here (NFC_QC is not Yes, or ccc != 0)
constexpr uint8_t kDecomposesBit = 128;  // has a canonical decomposition
constexpr uint32_t kBlockSize = 128;
constexpr uint32_t kCodePoints = 0x110000;

constexpr uint32_t category_bit(Category c) { return uint32_t{1} << c; }
constexpr uint32_t kLetters =
    category_bit(kLu) | category_bit(kLl) | category_bit(kLt) | category_bit(kLm) | category_bit(kLo);
constexpr uint32_t kMarks = category_bit(kMn) | category_bit(kMc) | category_bit(kMe);
constexpr uint32_t kNumbers = category_bit(kNd) | category_bit(kNl) | category_bit(kNo);

// Hangul syllables compose and decompose by arithmetic (Unicode ch. 3.12), not by table.
namespace hangul {
constexpr uint32_t kS = 0xac00, kL = 0x1100, kV = 0x1161, kT = 0x11a7, kLCount = 19, kVCount = 21, kTCount = 28;
constexpr uint32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;
}  // namespace hangul

struct UnicodeView {
  const uint16_t* block_index = nullptr;  // kCodePoints / kBlockSize entries, each < n_blocks
  const uint8_t* blocks = nullptr;
  const uint32_t* decomposed = nullptr;  // ascending
  const uint32_t* decomposition_offsets = nullptr;
  const uint32_t* decompositions = nullptr;
  const uint32_t* combining = nullptr;  // ascending
  const uint8_t* combining_class = nullptr;
  const uint64_t* compositions = nullptr;  // ascending
  const uint32_t* composed = nullptr;
  uint32_t n_decomposed = 0, n_combining = 0, n_compositions = 0;

  bool present() const { return block_index != nullptr; }
  uint8_t props(uint32_t cp) const {
    return blocks[uint32_t{block_index[cp / kBlockSize]} * kBlockSize + cp % kBlockSize];
  }
  Category category(uint32_t cp) const { return static_cast<Category>(props(cp) & kCategoryBits); }

  int combining_class_of(uint32_t cp) const {
    if ((props(cp) & kNfcBit) == 0) return 0;
    const long i = find(combining, n_combining, cp);
    return i < 0 ? 0 : combining_class[i];
  }

  // The full canonical decomposition of cp into out (at most 4 code points in Unicode 15;
  // the file's longest is checked at load); returns its length, 1 if cp stays itself.
  int decompose(uint32_t cp, uint32_t* out) const {
    if (cp - hangul::kS < hangul::kSCount) {
      const uint32_t s = cp - hangul::kS;
      out[0] = hangul::kL + s / hangul::kNCount;
      out[1] = hangul::kV + s % hangul::kNCount / hangul::kTCount;
      if (s % hangul::kTCount == 0) return 2;
      out[2] = hangul::kT + s % hangul::kTCount;
      return 3;
    }
    if ((props(cp) & kDecomposesBit) != 0) {
      const long i = find(decomposed, n_decomposed, cp);
      if (i >= 0) {
        const uint32_t from = decomposition_offsets[i], to = decomposition_offsets[i + 1];
        for (uint32_t k = from; k < to; ++k) out[k - from] = decompositions[k];
        return static_cast<int>(to - from);
      }
    }
    out[0] = cp;
    return 1;
  }

  // The primary composite of (a, b), or 0.
  uint32_t compose(uint32_t a, uint32_t b) const {
    if (a - hangul::kL < hangul::kLCount && b - hangul::kV < hangul::kVCount)
      return hangul::kS + ((a - hangul::kL) * hangul::kVCount + (b - hangul::kV)) * hangul::kTCount;
    if (a - hangul::kS < hangul::kSCount && (a - hangul::kS) % hangul::kTCount == 0 &&
        b - hangul::kT - 1 < hangul::kTCount - 1)
      return a + (b - hangul::kT);
    const uint64_t key = uint64_t{a} << 32 | b;
    size_t lo = 0, hi = n_compositions;
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (compositions[mid] < key) lo = mid + 1;
      else hi = mid;
    }
    return lo < n_compositions && compositions[lo] == key ? composed[lo] : 0;
  }

  // Does NFC leave s[0..n) (valid UTF-8) as it is? True when no character has the NFC bit.
  bool nfc_quick_yes(const char* s, size_t n) const {
    for (size_t at = 0; at < n;) {
      const auto b = static_cast<uint8_t>(s[at]);
      if (b < 0xcc) {  // below U+0300 nothing composes, decomposes or has a combining class
        at += b < 0x80 ? 1 : 2;
        continue;
      }
      uint32_t cp = 0;
      const int step = utf8_decode(s + at, n - at, cp);
      if (step == 0 || (props(cp) & kNfcBit) != 0) return false;
      at += static_cast<size_t>(step);
    }
    return true;
  }

  // NFC of s[0..n) (valid UTF-8) into out[0..out_capacity), through cps[0..cps_capacity)
  // (4 per input byte is always enough). Returns the output length, or -1 when a buffer
  // is too small.
  long nfc(const char* s, size_t n, char* out, size_t out_capacity, uint32_t* cps, size_t cps_capacity) const {
    // 1. full canonical decomposition
    size_t m = 0;
    for (size_t at = 0; at < n;) {
      uint32_t cp = 0;
      const int step = utf8_decode(s + at, n - at, cp);
      if (step == 0) return -1;
      at += static_cast<size_t>(step);
      uint32_t parts[8];
      const int k = decompose(cp, parts);
      if (m + static_cast<size_t>(k) > cps_capacity) return -1;
      for (int i = 0; i < k; ++i) cps[m++] = parts[i];
    }
    // 2. canonical order: a stable sort of each run of non-starters by combining class
    for (size_t i = 1; i < m; ++i) {
      const uint32_t c = cps[i];
      const int cc = combining_class_of(c);
      if (cc == 0) continue;
      size_t j = i;
      while (j > 0 && combining_class_of(cps[j - 1]) > cc) cps[j] = cps[j - 1], --j;
      cps[j] = c;
    }
    // 3. canonical composition, in place
    long starter = -1;
    int last_cc = 0;
    size_t w = 0;
    for (size_t i = 0; i < m; ++i) {
      const uint32_t c = cps[i];
      const int cc = combining_class_of(c);
      if (starter >= 0) {
        const bool adjacent = static_cast<long>(w) - 1 == starter;
        if (adjacent || last_cc < cc) {
          if (const uint32_t composite = compose(cps[starter], c); composite != 0) {
            cps[starter] = composite;
            continue;
          }
        }
      }
      if (cc == 0) starter = static_cast<long>(w);
      last_cc = cc;
      cps[w++] = c;
    }
    size_t o = 0;
    for (size_t i = 0; i < w; ++i) {
      if (o + static_cast<size_t>(utf8_length(cps[i])) > out_capacity) return -1;
      o += static_cast<size_t>(utf8_encode(cps[i], out + o));
    }
    return static_cast<long>(o);
  }

 private:
  template <class T>
  static long find(const T* sorted, uint32_t n, T key) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (sorted[mid] < key) lo = mid + 1;
      else hi = mid;
    }
    return lo < n && sorted[lo] == key ? static_cast<long>(lo) : -1;
  }
};

}  // namespace moe::text
