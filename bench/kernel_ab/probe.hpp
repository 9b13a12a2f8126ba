// The read-bandwidth probe's loop (tools/bench.hpp's, on one thread, in vectors of this
// build's width), for the kernel_ab programs: driver.cpp's probe and plain-loads sides,
// attention.cpp's probe before each decode turn.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace kernel_ab {

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

#if defined(__AVX512F__)
using fvec = float __attribute__((vector_size(64)));
#elif defined(__AVX__)
using fvec = float __attribute__((vector_size(32)));
#else
using fvec = float __attribute__((vector_size(16)));
#endif
inline volatile float probe_sink;

// Reads `size` bytes at a 64-byte aligned `bytes` as four streams of vector loads, the
// rest past four whole quarters of vectors in a plain loop.
inline void plain_pass(const void* bytes, size_t size) {
  const auto* buf = static_cast<const fvec*>(bytes);
  const size_t quarter = size / sizeof(fvec) / 4;
  fvec a0{}, a1{}, a2{}, a3{};
  for (size_t i = 0; i < quarter; ++i) {
    a0 += buf[i];
    a1 += buf[quarter + i];
    a2 += buf[2 * quarter + i];
    a3 += buf[3 * quarter + i];
  }
  for (size_t i = 4 * quarter; i < size / sizeof(fvec); ++i) a0 += buf[i];
  const fvec a = (a0 + a1) + (a2 + a3);
  float sum = 0;
  for (size_t i = 0; i < sizeof(fvec) / sizeof(float); ++i) sum += a[i];
  probe_sink = sum;
}

// The probe's pass: seconds to read `size` bytes.
inline double probe_pass(const void* bytes, size_t size) {
  const double t0 = now();
  plain_pass(bytes, size);
  return now() - t0;
}

}  // namespace kernel_ab
