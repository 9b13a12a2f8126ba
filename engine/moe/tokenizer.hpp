// The character tokenizer of the Shakespeare models: token id = index of a Unicode
// code point in the model's table. A view over the table in the .moe file.
#pragma once

#include <cstddef>
#include <cstdint>

#include "moe/error.hpp"
#include "moe/text/utf8.hpp"

namespace moe {

using text::utf8_decode;
using text::utf8_encode;

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
