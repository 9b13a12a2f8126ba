// Counter-based random numbers: a value is a pure function of (seed, stream, index).
// Dropout masks, router noise and batch offsets are drawn this way, so they can be made
// in parallel in any order, and a resumed run needs no generator state beyond the step.
#pragma once

#include <cmath>
#include <cstdint>

namespace moe::train {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Streams: one per use, so draws of different purposes never collide.
enum class Stream : uint64_t { init = 1, batch = 2, eval_batch = 3, dropout = 4, router_noise = 5 };

struct CounterRng {
  uint64_t key;
  CounterRng(uint64_t seed, Stream stream, uint64_t sub = 0)
      : key(splitmix64(splitmix64(seed ^ (static_cast<uint64_t>(stream) << 56)) ^
                       splitmix64(sub + 0x632be59bd9b4e019ull))) {}
  uint64_t bits(uint64_t i) const { return splitmix64(key ^ splitmix64(i)); }
  // Uniform in [0, 1) with 24 bits (exact in float).
  double uniform(uint64_t i) const { return static_cast<double>(bits(i) >> 40) * (1.0 / 16777216.0); }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t i, uint64_t n) const { return bits(i) % n; }
  // Standard normal (Box-Muller over two independent uniforms).
  double normal(uint64_t i) const {
    const double u1 = (static_cast<double>(bits(2 * i) >> 11) + 1.0) * (1.0 / 9007199254740992.0);  // (0, 1]
    const double u2 = static_cast<double>(bits(2 * i + 1) >> 11) * (1.0 / 9007199254740992.0);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

}  // namespace moe::train
