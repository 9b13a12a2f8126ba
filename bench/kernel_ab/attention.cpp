// Two builds' decode attention (kernels_tu.cpp), alternated token by token in one process
// over a KV cache of L layers of KVH kv heads at N_POS positions (f32, as moe_infer's
// default cache), each kv head read by G query heads: from memory once the cache
// outgrows L3. Prints each side's time a token, the cache bytes it reads a second, and
// whether both gave the same bits.
//   attention L KVH G HEAD_DIM N_POS TOKENS
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

void attention_old(const float*, const float*, const float*, float*, float*, int, int, int, int, int);
void attention_new(const float*, const float*, const float*, float*, float*, int, int, int, int, int);

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s L KVH G HEAD_DIM N_POS TOKENS\n", argv[0]);
    return 2;
  }
  const int L = std::atoi(argv[1]), kvh = std::atoi(argv[2]), group = std::atoi(argv[3]), hd = std::atoi(argv[4]);
  const int n_pos = std::atoi(argv[5]), tokens = std::atoi(argv[6]);
  if (L < 1 || kvh < 1 || group < 1 || hd < 1 || n_pos < 1 || tokens < 1) {
    std::fprintf(stderr, "every argument is 1 or more\n");
    return 2;
  }
  const size_t n = static_cast<size_t>(n_pos) * hd * L * kvh;
  // 64-byte aligned, as the engine's cache; never freed (the program's lifetime).
  const auto cache = [&](unsigned mul) {
    auto* p = static_cast<float*>(std::aligned_alloc(64, (sizeof(float) * n + 63) / 64 * 64));
    if (p == nullptr) std::exit(1);
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>(i * mul % 1000) / 1000.f - 0.5f;  // small, varied, finite
    return p;
  };
  const float* keys = cache(7919);
  const float* values = cache(104729);
  std::vector<float> q(static_cast<size_t>(kvh) * group * hd, 0.1f), scores(static_cast<size_t>(kvh) * group * n_pos),
      out[2] = {q, q};
  double seconds[2] = {0, 0};
  for (int t = 0; t < tokens; ++t)
    for (int turn = 0; turn < 2; ++turn) {
      const int side = (t + turn) % 2;  // 0 old, 1 new
      const auto t0 = std::chrono::steady_clock::now();
      (side ? attention_new : attention_old)(keys, values, q.data(), scores.data(), out[side].data(), L, kvh, group, hd,
                                             n_pos);
      seconds[side] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  const double bytes = 2.0 * sizeof(float) * static_cast<double>(n) * tokens;
  std::printf(
      "attention, %d layer(s) of %d kv heads x %d, head_dim %d, %d positions (%.0f MB of cache): old %.2f ms "
      "(%.1f GB/s), new %.2f ms (%.1f GB/s), new/old %.3f, %s\n",
      L, kvh, group, hd, n_pos, 2.0 * sizeof(float) * static_cast<double>(n) / 1e6, seconds[0] / tokens * 1e3,
      bytes / seconds[0] / 1e9, seconds[1] / tokens * 1e3, bytes / seconds[1] / 1e9, seconds[0] / seconds[1],
      std::memcmp(out[0].data(), out[1].data(), sizeof(float) * out[0].size()) == 0 ? "same bits" : "different bits");
}
