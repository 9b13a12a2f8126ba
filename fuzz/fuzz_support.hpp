// Shared by the fuzz targets: a 64-byte-aligned copy of the input (the .moe loader's
// contract), and a hard stop for a broken invariant, which libFuzzer reports as a crash.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace moe::fuzz {

class AlignedCopy {
 public:
  AlignedCopy(const uint8_t* data, size_t n) : n_(n) {
    p_ = static_cast<uint8_t*>(std::aligned_alloc(64, (n + 63) / 64 * 64 + 64));
    if (n) std::memcpy(p_, data, n);
  }
  ~AlignedCopy() { std::free(p_); }
  AlignedCopy(const AlignedCopy&) = delete;
  AlignedCopy& operator=(const AlignedCopy&) = delete;
  const uint8_t* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  uint8_t* p_;
  size_t n_;
};

[[noreturn]] inline void invariant_broken(const char* what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  std::abort();
}

}  // namespace moe::fuzz
