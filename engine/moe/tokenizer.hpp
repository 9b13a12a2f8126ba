// The character tokenizer of the Shakespeare models: token id = index of a Unicode
// code point in the model's table. A view over the table in the .moe file.
#pragma once

#include <cstddef>
#include <cstdint>

#include "moe/error.hpp"

namespace moe {

// Decodes one UTF-8 sequence at s[0..n); returns its length (0 on malformed input).
inline int utf8_decode(const char* s, size_t n, uint32_t& cp) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  if (n == 0) return 0;
  if (b(0) < 0x80) return cp = b(0), 1;
  int len = (b(0) & 0xe0) == 0xc0 ? 2 : (b(0) & 0xf0) == 0xe0 ? 3 : (b(0) & 0xf8) == 0xf0 ? 4 : 0;
  if (len == 0 || static_cast<size_t>(len) > n) return 0;
  cp = b(0) & (0x7f >> len);
  for (int i = 1; i < len; ++i) {
    if ((b(i) & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (b(i) & 0x3f);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;  // overlong, surrogate
  return len;
}

// Writes the UTF-8 form of cp (at most 4 bytes) and returns its length.
inline int utf8_encode(uint32_t cp, char* out) {
  if (cp < 0x80) return out[0] = static_cast<char>(cp), 1;
  if (cp < 0x800) {
    out[0] = static_cast<char>(0xc0 | cp >> 6);
    out[1] = static_cast<char>(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = static_cast<char>(0xe0 | cp >> 12);
    out[1] = static_cast<char>(0x80 | (cp >> 6 & 0x3f));
    out[2] = static_cast<char>(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = static_cast<char>(0xf0 | cp >> 18);
  out[1] = static_cast<char>(0x80 | (cp >> 12 & 0x3f));
  out[2] = static_cast<char>(0x80 | (cp >> 6 & 0x3f));
  out[3] = static_cast<char>(0x80 | (cp & 0x3f));
  return 4;
}

class CharTokenizer {
 public:
  CharTokenizer() = default;
  CharTokenizer(const uint32_t* chars, int n) : chars_(chars), n_(n) {}

  bool present() const { return chars_ != nullptr && n_ > 0; }
  int size() const { return n_; }
  uint32_t code_point(int id) const { return chars_[id]; }

  int find(uint32_t cp) const {
    for (int i = 0; i < n_; ++i)
      if (chars_[i] == cp) return i;
    return -1;
  }

  // UTF-8 text -> ids. Fails on malformed UTF-8, on a character the vocabulary lacks
  // (naming it and its byte offset), or when `capacity` ids are not enough.
  Error encode(const char* text, size_t len, int32_t* ids, int capacity, int& n_ids) const {
    n_ids = 0;
    for (size_t at = 0; at < len;) {
      uint32_t cp = 0;
      const int step = utf8_decode(text + at, len - at, cp);
      if (step == 0)
        return Error::make(ErrorCode::unknown_character, "prompt is not valid UTF-8 at byte %lu",
                           static_cast<unsigned long>(at));
      const int id = find(cp);
      if (id < 0) {
        char shown[5] = {};
        utf8_encode(cp, shown);
        const bool printable = cp >= 0x20 && cp != 0x7f;
        return Error::make(ErrorCode::unknown_character,
                           "prompt character '%s' (U+%04X) at byte %lu is not in the model's vocabulary of %d "
                           "characters",
                           printable ? shown : "?", static_cast<unsigned>(cp), static_cast<unsigned long>(at), n_);
      }
      if (n_ids == capacity) return Error::make(ErrorCode::bad_token, "prompt is longer than %d tokens", capacity);
      ids[n_ids++] = id;
      at += static_cast<size_t>(step);
    }
    return Error::none();
  }

  // id -> UTF-8 bytes in out[0..4); returns the byte count (0 for an id out of range).
  int decode(int32_t id, char out[4]) const {
    if (id < 0 || id >= n_) return 0;
    return utf8_encode(chars_[id], out);
  }

 private:
  const uint32_t* chars_ = nullptr;
  int n_ = 0;
};

}  // namespace moe
