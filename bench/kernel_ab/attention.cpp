// Two builds' attention (kernels_tu.cpp), alternated in one process over a KV cache of L
// layers of KVH kv heads (f32, as moe_infer's default cache), each kv head's block holding
// a context of 4,096 positions as the engine's does (KERNEL_AB_CONTEXT: another, at least
// N_POS), each read by G query heads. Each of REPS turns is a decode token at N_POS
// positions, or (CHUNK > 1) a prefill chunk's last CHUNK tokens, the last at N_POS; before
// each decode turn, a pass of KERNEL_AB_PROBE_MIB (default 256) MiB of the read-bandwidth
// probe's loop evicts the cache from L3, as a token's weights do in the engine, and gives
// the probe's GB/s beside the turns'. Prints each side's time a turn, its rate (a decode
// token: GB/s of the cache it reads; a chunk: G multiply-adds a second), and whether both
// gave the same bits.
//   attention L KVH G HEAD_DIM N_POS REPS [CHUNK]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "probe.hpp"

void attention_old(const float*, const float*, const float*, float*, float*, int, int, int, int, int, int, int);
void attention_new(const float*, const float*, const float*, float*, float*, int, int, int, int, int, int, int);

using kernel_ab::now, kernel_ab::probe_pass;

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
  const char* context_env = std::getenv("KERNEL_AB_CONTEXT");
  const int context = std::max(n_pos, context_env ? std::atoi(context_env) : 4096);
  const size_t n = static_cast<size_t>(n_pos) * hd * L * kvh;  // the elements a token reads
  const size_t head = static_cast<size_t>(context) * hd, size = head * L * kvh;
  // 64-byte aligned, as the engine's cache; never freed (the program's lifetime). Each
  // kv head's first n_pos positions written (the rest is never read).
  const auto cache = [&](unsigned mul) {
    auto* p = static_cast<float*>(std::aligned_alloc(64, (sizeof(float) * size + 63) / 64 * 64));
    if (p == nullptr) std::exit(1);
    for (size_t h = 0; h < size; h += head)
      for (size_t i = h; i < h + static_cast<size_t>(n_pos) * hd; ++i)
        p[i] = static_cast<float>(i * mul % 1000) / 1000.f - 0.5f;  // small, varied, finite
    return p;
  };
  const float* keys = cache(7919);
  const float* values = cache(104729);
  const char* probe_env = std::getenv("KERNEL_AB_PROBE_MIB");
  const size_t probe_bytes = chunk == 1 ? (probe_env ? std::strtoul(probe_env, nullptr, 10) : 256) << 20 : 0;
  float* probe = nullptr;
  if (probe_bytes > 0) {
    probe = static_cast<float*>(std::aligned_alloc(64, probe_bytes));
    if (probe == nullptr) std::exit(1);
    for (size_t i = 0; i < probe_bytes / sizeof(float); ++i) probe[i] = static_cast<float>(i & 1023);
  }
  std::vector<float> q(static_cast<size_t>(chunk) * kvh * group * hd),
      scores((static_cast<size_t>(chunk) * kvh * group + 16) * n_pos), out[2] = {q, q};  // + a pass's 16 rows
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>(i * 31 % 97) / 970.f;
  double seconds[2] = {0, 0}, probe_seconds = 0;
  for (int t = 0; t < tokens; ++t)
    for (int turn = 0; turn < 2; ++turn) {
      const int side = (t + turn) % 2;  // 0 old, 1 new
      if (probe) probe_seconds += probe_pass(probe, probe_bytes);
      const double t0 = now();
      (side ? attention_new : attention_old)(keys, values, q.data(), scores.data(), out[side].data(), L, kvh, group, hd,
                                             n_pos, chunk, context);
      seconds[side] += now() - t0;
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
  if (probe) {
    const double probe_gb_s = static_cast<double>(probe_bytes) * tokens * 2 / probe_seconds / 1e9;
    std::printf("  probe %.1f GB/s (a pass of %zu MiB before each turn): old %.2f, new %.2f of it\n", probe_gb_s,
                probe_bytes >> 20, rate[0] / probe_gb_s, rate[1] / probe_gb_s);
  }
}
