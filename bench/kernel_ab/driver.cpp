// Two builds of the decode kernels, alternated token by token over the weights one
// decode token of a llama MoE streams (4 attention matrices and K of E experts' 3
// matrices per layer, experts drawn at random per token and run in index order, as the
// engine runs them), so that both see the same machine load; each token runs both
// builds, in alternating order. With N > 1 every product takes N tokens at once, as
// prefill's expert products do (a "token" is then one such pass over the layers). L
// layers of E experts (default 8 and 8, K 2) set how much is read: 1 and 2 keep a small
// model's weights in the caches. The weights sit in one buffer in huge pages, as
// `moe_infer --load read` holds a model (KERNEL_AB_PAGES=4k: 4 KB pages, as a mapped
// file's). KERNEL_AB_PROBE_MIB=M (M > 0) adds a third side to each token: one pass over M
// MiB of the read-bandwidth probe's loop (tools/bench.hpp: four streams of vector loads,
// huge pages), so that the kernels' GB/s can be read against what the core reads in the
// same seconds. KERNEL_AB_PLAIN=1 adds another: the probe's loop over each of the token's
// matrices in turn (plain_pass), so that the kernels' GB/s can also be read against what
// plain loads read over the same bytes in the same order (short streams, one matrix after
// another), not only over the probe's one long buffer.
//   driver D F QD KVD DTYPE TOKENS [N [L E [K]]]    (DTYPE 0 f32, 1 f16, 2 int8, 3 int4)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <sys/mman.h>

#include "probe.hpp"

void kernels_old(const void*, const float*, int, int, int, int, const float*, const int8_t*, const float*, float*);
void kernels_new(const void*, const float*, int, int, int, int, const float*, const int8_t*, const float*, float*);

namespace {
using kernel_ab::now, kernel_ab::plain_pass, kernel_ab::probe_pass;
struct Weights {
  uint8_t* bytes;  // in the arena
  size_t size;
  std::vector<float> scales;
  int rows, cols;
};

// `bytes` in 2 MB pages where the kernel grants them (asked for before the first touch),
// else 4 KB ones; never freed (the program's lifetime). This and probe.hpp repeat
// allocate_in_huge_pages and tools/bench.hpp's loop: the driver links no engine code,
// since two versions of it share the program (kernels_tu.cpp).
uint8_t* allocate(size_t bytes, bool huge) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, rounded);
  if (p == nullptr) {
    std::fprintf(stderr, "no memory for %zu bytes\n", rounded);
    std::exit(1);
  }
  if (huge) madvise(p, rounded, MADV_HUGEPAGE);
  return static_cast<uint8_t*>(p);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8 && argc != 10 && argc != 11) {
    std::fprintf(stderr, "usage: %s D F QD KVD DTYPE TOKENS [N [L E [K]]]\n", argv[0]);
    return 2;
  }
  const int D = std::atoi(argv[1]), F = std::atoi(argv[2]), QD = std::atoi(argv[3]), KVD = std::atoi(argv[4]);
  const int dtype = std::atoi(argv[5]), tokens = std::atoi(argv[6]), n = argc >= 8 ? std::atoi(argv[7]) : 1;
  const int L = argc >= 10 ? std::atoi(argv[8]) : 8, E = argc >= 10 ? std::atoi(argv[9]) : 8;
  const int K = argc == 11 ? std::atoi(argv[10]) : 2;
  if (n < 1 || n > 64 || L < 1 || E < 2 || K < 1 || K > E) {
    std::fprintf(stderr, "N: 1 to 64; L: 1 or more; E: 2 or more; K: 1 to E\n");
    return 2;
  }
  const int elem = dtype == 0 ? 4 : dtype == 1 ? 2 : 1;
  const char* pages = std::getenv("KERNEL_AB_PAGES");
  const bool huge = pages == nullptr || std::string(pages) != "4k";
  const char* probe_mib = std::getenv("KERNEL_AB_PROBE_MIB");
  const size_t probe_bytes = (probe_mib ? std::strtoul(probe_mib, nullptr, 10) : 0) << 20;
  std::mt19937 rng(1);
  // int4 (tensor.hpp's q4): 18 bytes per block of 32, a row's groups of up to 16 blocks
  // each as [the blocks' f16 scales][their nibbles]. Each matrix starts on a 64-byte line.
  const auto matrix_bytes = [&](int rows, int cols) {
    const size_t row_bytes = dtype == 3 ? static_cast<size_t>(cols) / 32 * 18 : static_cast<size_t>(cols) * elem;
    return (static_cast<size_t>(rows) * row_bytes + 63) / 64 * 64;
  };
  const size_t arena_bytes =
      static_cast<size_t>(L) * (matrix_bytes(QD, D) + 2 * matrix_bytes(KVD, D) + matrix_bytes(D, QD) +
                                static_cast<size_t>(E) * (2 * matrix_bytes(F, D) + matrix_bytes(D, F)));
  uint8_t* arena = allocate(arena_bytes, huge);
  size_t used = 0;
  auto make = [&](int rows, int cols) {
    const size_t row_bytes = dtype == 3 ? static_cast<size_t>(cols) / 32 * 18 : static_cast<size_t>(cols) * elem;
    Weights w{arena + used, rows * row_bytes, std::vector<float>(static_cast<size_t>(rows), 0.01f), rows, cols};
    used += matrix_bytes(rows, cols);
    for (size_t i = 0; i < w.size; ++i)  // int8, int4: random; f32/f16: small finite values
      w.bytes[i] = dtype >= 2 ? static_cast<uint8_t>(rng()) : (i % elem == static_cast<size_t>(elem - 1) ? 0x3c : 0);
    if (dtype == 3)
      for (int r = 0; r < rows; ++r) {
        uint8_t* group = w.bytes + r * row_bytes;
        for (int first = 0; first < cols / 32; first += 16) {
          const int g = std::min(16, cols / 32 - first);
          for (int j = 0; j < g; ++j) group[2 * j] = 0, group[2 * j + 1] = 0x20;  // scale 2^-7
          group += 18 * g;
        }
      }
    return w;
  };
  std::vector<Weights> attention, experts;
  for (int l = 0; l < L; ++l) {
    attention.push_back(make(QD, D));
    attention.push_back(make(KVD, D));
    attention.push_back(make(KVD, D));
    attention.push_back(make(D, QD));
    for (int e = 0; e < E; ++e) {
      experts.push_back(make(F, D));
      experts.push_back(make(F, D));
      experts.push_back(make(D, F));
    }
  }
  const int widest = std::max({D, F, QD});
  std::vector<float> x(static_cast<size_t>(n) * widest), y(static_cast<size_t>(n) * widest),
      xs(static_cast<size_t>(n) * (widest / 32 + 1), 0.01f);
  for (float& v : x) v = static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 1000.f;
  std::vector<int8_t> xq(static_cast<size_t>(n) * widest);
  for (int8_t& v : xq) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  uint8_t* probe = nullptr;
  if (probe_bytes > 0) {
    probe = allocate(probe_bytes, true);
    float* f = reinterpret_cast<float*>(probe);
    for (size_t i = 0; i < probe_bytes / sizeof(float); ++i) f[i] = static_cast<float>(i & 1023);  // touch every page
  }
  const char* plain_env = std::getenv("KERNEL_AB_PLAIN");
  const int sides = plain_env != nullptr && std::string(plain_env) == "1" ? 3 : 2;
  double seconds[3] = {0, 0, 0}, bytes = 0, probe_seconds = 0;
  for (int t = 0; t < tokens; ++t) {
    if (probe) probe_seconds += probe_pass(probe, probe_bytes);
    for (int turn = 0; turn < sides; ++turn) {
      const int side = (t + turn) % sides;  // 0 old, 1 new, 2 plain loads
      std::mt19937 pick(static_cast<unsigned>(t));
      std::vector<const Weights*> product;  // the token's products, layer by layer
      for (int l = 0; l < L; ++l) {
        for (int i = 0; i < 4; ++i) product.push_back(&attention[static_cast<size_t>(4 * l + i)]);
        std::vector<int> order(static_cast<size_t>(E));
        for (int e = 0; e < E; ++e) order[static_cast<size_t>(e)] = e;
        for (int j = 0; j < K; ++j)  // K distinct experts: the first K of a partial shuffle
          std::swap(order[static_cast<size_t>(j)],
                    order[static_cast<size_t>(j) + pick() % static_cast<unsigned>(E - j)]);
        std::sort(order.begin(), order.begin() + K);
        for (int j = 0; j < K; ++j)
          for (int k = 0; k < 3; ++k)
            product.push_back(&experts[static_cast<size_t>((l * E + order[static_cast<size_t>(j)]) * 3 + k)]);
      }
      const double t0 = now();
      for (const Weights* w : product) {
        if (side == 2) plain_pass(w->bytes, w->size);
        else
          (side ? kernels_new : kernels_old)(w->bytes, w->scales.data(), dtype, w->rows, w->cols, n, x.data(),
                                             xq.data(), xs.data(), y.data());
        if (side == 0) bytes += static_cast<double>(w->size);
      }
      seconds[side] += now() - t0;
    }
  }
  std::printf(
      "d %d ffn %d %s, %d token(s) a product%s: old %.0f tok/s (%.1f GB/s), new %.0f tok/s (%.1f GB/s), "
      "new/old %.3f\n",
      D, F,
      dtype == 0   ? "f32"
      : dtype == 1 ? "f16"
      : dtype == 2 ? "int8"
                   : "int4",
      n,
      argc >= 10 ? (" (" + std::to_string(L) + " layer(s) of " + std::to_string(E) + " experts, " + std::to_string(K) +
                    " a token)")
                       .c_str()
                 : "",
      static_cast<double>(n) * tokens / seconds[0], bytes / seconds[0] / 1e9,
      static_cast<double>(n) * tokens / seconds[1], bytes / seconds[1] / 1e9, seconds[0] / seconds[1]);
  if (sides == 3) {
    const double plain_gb_s = bytes / seconds[2] / 1e9;
    std::printf("  plain loads over the same matrices %.1f GB/s: old %.2f, new %.2f of it\n", plain_gb_s,
                bytes / seconds[0] / 1e9 / plain_gb_s, bytes / seconds[1] / 1e9 / plain_gb_s);
  }
  if (probe) {
    const double probe_gb_s = static_cast<double>(probe_bytes) * tokens / probe_seconds / 1e9;
    long huge_kb = 0;  // what the kernel granted in 2 MB pages
    if (FILE* f = std::fopen("/proc/self/smaps_rollup", "r")) {
      char line[256];
      while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "AnonHugePages: %ld kB", &huge_kb) == 1) break;
      std::fclose(f);
    }
    std::printf(
        "  probe %.1f GB/s (a pass of %zu MiB before each token): old %.2f, new %.2f of it; %.0f of %.0f MiB "
        "in huge pages\n",
        probe_gb_s, probe_bytes >> 20, bytes / seconds[0] / 1e9 / probe_gb_s, bytes / seconds[1] / 1e9 / probe_gb_s,
        huge_kb / 1024.0, static_cast<double>(arena_bytes + probe_bytes) / (1 << 20));
  }
}
