// Errors are values: the engine builds without exceptions and never allocates, so an
// error is a code plus a message formatted into a fixed buffer.
#pragma once

#include <cstdarg>

#include "moe/format.hpp"

namespace moe {

enum class ErrorCode : unsigned char {
  ok = 0,
  not_a_model,  // wrong identifier, too small
  corrupt,      // FlatBuffers verification, checksum, sizes that disagree
  unsupported_version,
  config_mismatch,  // the file is valid but for another compiled config
  bad_tensor,       // missing, duplicated, wrong shape or dtype, bad scales
  bad_tokenizer,
  unknown_character,  // a prompt character outside the vocabulary
  bad_token,          // a token id outside [0, vocab)
  context_full,       // llama family: max_context tokens are in the cache
  non_finite,         // the model computed a NaN or infinite logit (damaged or out-of-range weights)
  io,                 // files: open, read, map
};

struct [[nodiscard]] Error {
  ErrorCode code = ErrorCode::ok;
  char message[320] = {};

  bool ok() const { return code == ErrorCode::ok; }
  explicit operator bool() const { return !ok(); }  // `if (auto e = f()) report(e);`
  const char* what() const { return message; }

  static Error none() { return Error{}; }
#if defined(__GNUC__)
  __attribute__((format(printf, 2, 3)))
#endif
  static Error
  make(ErrorCode code, const char* fmt, ...) {
    Error e;
    e.code = code;
    va_list args;
    va_start(args, fmt);
    vformat(e.message, sizeof e.message, fmt, args);
    va_end(args);
    return e;
  }
};

}  // namespace moe
