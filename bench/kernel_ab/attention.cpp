// Two builds' attention (kernels_tu.cpp), alternated in one process over a KV cache of L
// layers of KVH kv heads at N_POS positions (f32, as moe_infer's default cache), each kv
// head read by G query heads: from memory once the cache outgrows L3. Each of REPS turns is
// a decode token at N_POS positions, or (CHUNK > 1) a prefill chunk's last CHUNK tokens,
// the last at N_POS. Prints each side's time a turn, its rate (a decode token: GB/s of the
// cache; a chunk: G multiply-adds a second), and whether both gave the same bits.
//   attention L KVH G HEAD_DIM N_POS REPS [CHUNK]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

void attention_old(const float*, const float*, const float*, float*, float*, int, int, int, int, int, int);
void attention_new(const float*, const float*, const float*, float*, float*, int, int, int, int, int, int);

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8) {
    std::fprintf(stderr, "usage: %s L KVH G HEAD_DIM N_POS REPS [CHUNK]\n", argv[0]);
    return 2;
  }
  const int L = std::atoi(argv[1]), kvh = std::atoi(argv[2]), group = std::atoi(argv[3]), hd = std::atoi(argv[4]);
  const int n_pos = std::atoi(argv[5]), tokens = std::atoi(argv[6]), chunk = argc == 8 ? std::atoi(argv[7]) : 1;
  if (L < 1 || kvh < 1 || group < 1 || hd < 1 || n_pos < 1 || tokens < 1 || chunk < 1 || chunk > n_pos) {
    std::fprintf(stderr, "every argument is 1 or more, CHUNK at most N_POS\n");
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
  std::vector<float> q(static_cast<size_t>(chunk) * kvh * group * hd),
      scores((static_cast<size_t>(chunk) * kvh * group + 16) * n_pos), out[2] = {q, q};  // + a pass's 16 rows
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>(i * 31 % 97) / 970.f;
  double seconds[2] = {0, 0};
  for (int t = 0; t < tokens; ++t)
    for (int turn = 0; turn < 2; ++turn) {
      const int side = (t + turn) % 2;  // 0 old, 1 new
      const auto t0 = std::chrono::steady_clock::now();
      (side ? attention_new : attention_old)(keys, values, q.data(), scores.data(), out[side].data(), L, kvh, group, hd,
                                             n_pos, chunk);
      seconds[side] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  // A decode token: GB/s of the cache it reads; a chunk: G multiply-adds a second (q.k and
  // the weighted sum), the cache staying in the caches between its tokens.
  const double bytes = 2.0 * sizeof(float) * static_cast<double>(n) * tokens;
  const double macs = 2.0 * L * kvh * group * hd *
                      (static_cast<double>(chunk) * (n_pos - chunk + 1) + chunk * (chunk - 1) / 2.0) * tokens;
  const double rate[2] = {chunk > 1 ? macs / seconds[0] / 1e9 : bytes / seconds[0] / 1e9,
                          chunk > 1 ? macs / seconds[1] / 1e9 : bytes / seconds[1] / 1e9};
  const char* unit = chunk > 1 ? "GMAC/s" : "GB/s";
  std::printf(
      "attention, %d layer(s) of %d kv heads x %d, head_dim %d, %d token(s) to %d positions (%.0f MB of cache): old "
      "%.2f ms (%.1f %s), new %.2f ms (%.1f %s), new/old %.3f, %s\n",
      L, kvh, group, hd, chunk, n_pos, 2.0 * sizeof(float) * static_cast<double>(n) / 1e6, seconds[0] / tokens * 1e3,
      rate[0], unit, seconds[1] / tokens * 1e3, rate[1], unit, seconds[0] / seconds[1],
      std::memcmp(out[0].data(), out[1].data(), sizeof(float) * out[0].size()) == 0 ? "same bits" : "different bits");
}
