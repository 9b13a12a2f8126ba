// Token ids -> text, one token at a time, printing exactly what the reference decoder
// gives for the whole sequence: a character split across tokens (byte fallback, byte-level
// pieces) is held back until it is whole, bytes that can never be text become U+FFFD (as
// a lossy UTF-8 decoder does), the SentencePiece space the normalizer added is stripped at
// the start of the text, and clean_up_tokenization_spaces is applied as the text streams.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "moe/error.hpp"
#include "moe/text/bpe_tokenizer.hpp"
#include "moe/text/utf8.hpp"

namespace moe::text {

class StreamDecoder {
 public:
  static constexpr size_t kSlack = 32;  // beyond 3 bytes per input byte, what one call may print

  // `start_of_text`: these tokens begin the text (a continuation after a prompt does not).
  StreamDecoder(const BpeTokenizer& t, bool start_of_text, bool skip_special)
      : t_(&t), skip_special_(skip_special), strip_left_(start_of_text ? t.strip_spaces() : 0) {}

  // The text token `id` completes, into out[0..cap); its length, or -1 if cap is below
  // 3 * (the token's bytes) + kSlack.
  long put(int32_t id, char* out, size_t cap) {
    if (skip_special_ && t_->is_special(id)) return 0;
    size_t n;
    const char* p = t_->decoded(id, n);
    if (cap < 3 * n + kSlack) return -1;
    out_ = out;
    o_ = 0;
    for (size_t i = 0; i < n; ++i) {
      held_[n_held_++] = p[i];
      drain(false);
    }
    return static_cast<long>(o_);
  }

  // What is still held back (an unfinished character becomes U+FFFD); at most kSlack bytes.
  long finish(char* out, size_t cap) {
    if (cap < kSlack) return -1;
    out_ = out;
    o_ = 0;
    drain(true);
    for (int i = 0; i < n_clean_; ++i) out_[o_++] = clean_[i];
    n_clean_ = 0;
    return static_cast<long>(o_);
  }

 private:
  const BpeTokenizer* t_;
  bool skip_special_;
  int strip_left_;
  char held_[8] = {};
  int n_held_ = 0;
  char clean_[8] = {};
  int n_clean_ = 0;
  char* out_ = nullptr;
  size_t o_ = 0;

  void drain(bool at_end) {
    while (n_held_ > 0) {
      uint32_t cp;
      const int k = utf8_decode(held_, static_cast<size_t>(n_held_), cp);
      if (k > 0) {
        character(held_, k);
        consume(k);
      } else if (!at_end && utf8_incomplete(held_, static_cast<size_t>(n_held_))) {
        return;
      } else {
        character("\xef\xbf\xbd", 3);
        consume(utf8_invalid_prefix(held_, static_cast<size_t>(n_held_)));
      }
    }
  }
  void consume(int k) {
    std::memmove(held_, held_ + k, static_cast<size_t>(n_held_ - k));
    n_held_ -= k;
  }

  void character(const char* c, int k) {
    if (strip_left_ > 0) {
      if (k == 1 && c[0] == ' ') return static_cast<void>(--strip_left_);
      strip_left_ = 0;
    }
    if (!t_->cleanup_spaces()) return emit(c, k);
    if (n_clean_ == 0 && !(k == 1 && c[0] == ' ')) return emit(c, k);
    // transformers' clean_up_tokenization: these lose the space before them
    static constexpr const char* kFrom[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static constexpr const char* kTo[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    if (n_clean_ + k > static_cast<int>(sizeof clean_)) flush_clean();
    std::memcpy(clean_ + n_clean_, c, static_cast<size_t>(k));
    n_clean_ += k;
    bool prefix = false;
    for (size_t i = 0; i < sizeof kFrom / sizeof kFrom[0]; ++i) {
      const size_t len = std::strlen(kFrom[i]);
      if (static_cast<int>(len) == n_clean_ && std::memcmp(kFrom[i], clean_, len) == 0) {
        n_clean_ = 0;
        return emit(kTo[i], static_cast<int>(std::strlen(kTo[i])));
      }
      prefix = prefix ||
               (static_cast<int>(len) > n_clean_ && std::memcmp(kFrom[i], clean_, static_cast<size_t>(n_clean_)) == 0);
    }
    if (!prefix) flush_clean();
  }
  // The held text cannot become a pattern: its space goes out, the rest is looked at again.
  void flush_clean() {
    char rest[8];
    const int n = n_clean_ - 1;
    std::memcpy(rest, clean_ + 1, static_cast<size_t>(n));
    n_clean_ = 0;
    emit(" ", 1);
    for (int i = 0; i < n;) {
      uint32_t cp;
      int k = utf8_decode(rest + i, static_cast<size_t>(n - i), cp);
      if (k == 0) k = 1;
      character(rest + i, k);
      i += k;
    }
  }
  void emit(const char* c, int k) {
    std::memcpy(out_ + o_, c, static_cast<size_t>(k));
    o_ += static_cast<size_t>(k);
  }
};

// ids -> the whole text, as the reference's decode(ids, {skip_special_tokens}) gives it.
// Fails when out is too small (3 bytes per token byte + kSlack always suffices).
inline Error decode_text(const BpeTokenizer& t, const int32_t* ids, int n, bool skip_special, char* out, size_t cap,
                         size_t& len) {
  StreamDecoder d(t, true, skip_special);
  len = 0;
  for (int i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= t.size())
      return Error::make(ErrorCode::bad_token, "token id %d is outside the tokenizer's %d tokens",
                         static_cast<int>(ids[i]), t.size());
    const long k = d.put(ids[i], out + len, cap - len);
    if (k < 0)
      return Error::make(ErrorCode::bad_token, "decode: the output buffer of %lu bytes is too small",
                         static_cast<unsigned long>(cap));
    len += static_cast<size_t>(k);
  }
  const long k = d.finish(out + len, cap - len);
  if (k < 0)
    return Error::make(ErrorCode::bad_token, "decode: the output buffer of %lu bytes is too small",
                       static_cast<unsigned long>(cap));
  len += static_cast<size_t>(k);
  return Error::none();
}

}  // namespace moe::text
