// Two builds of the decode kernels, alternated token by token over the weights one
// decode token of a llama MoE streams (4 attention matrices and 2 of 8 experts' 3
// matrices per layer, experts drawn at random per token), so that both see
// the same machine load; each token runs both builds, in alternating order. With N > 1
// every product takes N tokens at once, as prefill's expert products do (a "token" is
// then one such pass over the layers). L layers of E experts (default 8 and 8) set how
// much is read: 1 and 2 keep a small model's weights in the caches.
//   driver D F QD KVD DTYPE TOKENS [N [L E]]      (DTYPE 0 f32, 1 f16, 2 int8, 3 int4)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

void kernels_old(const void*, const float*, int, int, int, int, const float*, const int8_t*, const float*, float*);
void kernels_new(const void*, const float*, int, int, int, int, const float*, const int8_t*, const float*, float*);

namespace {
struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
  int rows, cols;
};
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8 && argc != 10) {
    std::fprintf(stderr, "usage: %s D F QD KVD DTYPE TOKENS [N [L E]]\n", argv[0]);
    return 2;
  }
  const int D = std::atoi(argv[1]), F = std::atoi(argv[2]), QD = std::atoi(argv[3]), KVD = std::atoi(argv[4]);
  const int dtype = std::atoi(argv[5]), tokens = std::atoi(argv[6]), n = argc >= 8 ? std::atoi(argv[7]) : 1;
  const int L = argc == 10 ? std::atoi(argv[8]) : 8, E = argc == 10 ? std::atoi(argv[9]) : 8;
  if (n < 1 || n > 64 || L < 1 || E < 2) {
    std::fprintf(stderr, "N: 1 to 64; L: 1 or more; E: 2 or more\n");
    return 2;
  }
  const int elem = dtype == 0 ? 4 : dtype == 1 ? 2 : 1;
  std::mt19937 rng(1);
  auto make = [&](int rows, int cols) {
    // int4 (tensor.hpp's q4): 18 bytes per block of 32, a row's groups of up to 16 blocks
    // each as [the blocks' f16 scales][their nibbles].
    const size_t row_bytes = dtype == 3 ? static_cast<size_t>(cols) / 32 * 18 : static_cast<size_t>(cols) * elem;
    Weights w{std::vector<uint8_t>(rows * row_bytes), std::vector<float>(static_cast<size_t>(rows), 0.01f), rows, cols};
    for (size_t i = 0; i < w.bytes.size(); ++i)  // int8, int4: random; f32/f16: small finite values
      w.bytes[i] = dtype >= 2 ? static_cast<uint8_t>(rng()) : (i % elem == static_cast<size_t>(elem - 1) ? 0x3c : 0);
    if (dtype == 3)
      for (int r = 0; r < rows; ++r) {
        uint8_t* group = w.bytes.data() + r * row_bytes;
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
  double seconds[2] = {0, 0}, bytes = 0;
  for (int t = 0; t < tokens; ++t)
    for (int turn = 0; turn < 2; ++turn) {
      const int side = (t + turn) % 2;  // 0 old, 1 new
      std::mt19937 pick(static_cast<unsigned>(t));
      const double t0 = now();
      for (int l = 0; l < L; ++l) {
        std::vector<const Weights*> product;
        for (int i = 0; i < 4; ++i) product.push_back(&attention[static_cast<size_t>(4 * l + i)]);
        const int e0 = static_cast<int>(pick() % E), e1 = (e0 + 1 + static_cast<int>(pick() % (E - 1))) % E;
        for (int e : {e0, e1})
          for (int k = 0; k < 3; ++k) product.push_back(&experts[static_cast<size_t>((l * E + e) * 3 + k)]);
        for (const Weights* w : product) {
          (side ? kernels_new : kernels_old)(w->bytes.data(), w->scales.data(), dtype, w->rows, w->cols, n, x.data(),
                                             xq.data(), xs.data(), y.data());
          if (side == 0) bytes += static_cast<double>(w->bytes.size());
        }
      }
      seconds[side] += now() - t0;
    }
  std::printf(
      "d %d ffn %d %s, %d token(s) a product%s: old %.0f tok/s (%.1f GB/s), new %.0f tok/s (%.1f GB/s), "
      "new/old %.3f\n",
      D, F,
      dtype == 0   ? "f32"
      : dtype == 1 ? "f16"
      : dtype == 2 ? "int8"
                   : "int4",
      n, argc == 10 ? (" (" + std::to_string(L) + " layer(s) of " + std::to_string(E) + " experts)").c_str() : "",
      static_cast<double>(n) * tokens / seconds[0], bytes / seconds[0] / 1e9,
      static_cast<double>(n) * tokens / seconds[1], bytes / seconds[1] / 1e9, seconds[0] / seconds[1]);
}
