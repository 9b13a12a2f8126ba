// UTF-8: one code point at a time, strictly (no overlongs, surrogates or stray bytes),
// and the lossy repair the reference decoders apply to byte sequences that are not text.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moe::text {

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

inline int utf8_length(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

// The byte offset of the first malformed sequence in s[0..n), or n if it is all UTF-8.
inline size_t utf8_invalid_at(const char* s, size_t n) {
  for (size_t at = 0; at < n;) {
    if (static_cast<uint8_t>(s[at]) < 0x80) {
      ++at;
      continue;
    }
    uint32_t cp;
    const int step = utf8_decode(s + at, n - at, cp);
    if (step == 0) return at;
    at += static_cast<size_t>(step);
  }
  return n;
}

// How many bytes at s[0..n) a lossy decoder replaces by one U+FFFD when s does not start
// with a whole sequence: the maximal subpart of a valid sequence (Unicode 15, ch. 3,
// "U+FFFD substitution of maximal subparts"), which is what Rust's from_utf8_lossy and
// the WHATWG TextDecoder do. Returns 0 when s starts with a whole sequence.
inline int utf8_invalid_prefix(const char* s, size_t n) {
  uint32_t cp;
  if (n == 0 || utf8_decode(s, n, cp) != 0) return 0;
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t lead = b(0);
  int len;
  uint8_t lo = 0x80, hi = 0xbf;  // the range of the second byte
  if (lead >= 0xc2 && lead <= 0xdf) len = 2;
  else if (lead >= 0xe0 && lead <= 0xef) len = 3, lo = lead == 0xe0 ? 0xa0 : 0x80, hi = lead == 0xed ? 0x9f : 0xbf;
  else if (lead >= 0xf0 && lead <= 0xf4) len = 4, lo = lead == 0xf0 ? 0x90 : 0x80, hi = lead == 0xf4 ? 0x8f : 0xbf;
  else return 1;
  int k = 1;
  for (; k < len && static_cast<size_t>(k) < n; ++k) {
    const uint8_t c = b(static_cast<size_t>(k));
    if (k == 1 ? (c < lo || c > hi) : (c & 0xc0) != 0x80) break;
  }
  return k;  // < len: a truncated sequence, replaced as one
}

// Is s[0..n) the start of a sequence that more bytes could complete (a streaming decoder
// holds such a tail back instead of printing it broken)?
inline bool utf8_incomplete(const char* s, size_t n) {
  return n > 0 && n < 4 && utf8_invalid_prefix(s, n) == static_cast<int>(n) && static_cast<uint8_t>(s[0]) >= 0xc2 &&
         static_cast<uint8_t>(s[0]) <= 0xf4 &&
         n < static_cast<size_t>(static_cast<uint8_t>(s[0]) >= 0xf0   ? 4
                                 : static_cast<uint8_t>(s[0]) >= 0xe0 ? 3
                                                                      : 2);
}

}  // namespace moe::text
