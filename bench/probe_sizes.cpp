// The read-bandwidth probe of `moe_infer --bench` (tools/bench.hpp) at several buffer
// sizes, taking turns round after round so that all see the same machine load: where a
// buffer is too small, part of each pass comes from the largest cache and the roofline
// reads high (bench/README.md, "The probe's size").
//   bench_probe_sizes [--threads N] [--rounds R] MIB [MIB...]
// Prints, per size, the median over rounds of each round's best of three passes, and
// their range, in GB/s.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "platform/thread_pool.hpp"
#include "tools/bench.hpp"

int main(int argc, char** argv) {
  int threads = 1, rounds = 5;
  std::vector<size_t> sizes_mib;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (const long mib = std::atol(argv[i]); mib > 0 && mib <= 4096) sizes_mib.push_back(static_cast<size_t>(mib));
    else
      return std::fprintf(stderr, "bench_probe_sizes: '%s' is not a size in MiB (1-4096) or an option\n", argv[i]), 2;
  }
  if (sizes_mib.empty() || threads < 1 || threads > 256 || rounds < 1)  // the probe keeps a sum per thread, 256 at most
    return std::fprintf(stderr, "usage: bench_probe_sizes [--threads N (1-256)] [--rounds R] MIB [MIB...]\n"), 2;
  moe::platform::ThreadPool pool(threads);
  std::vector<std::unique_ptr<moe::tools::ReadBandwidthProbe>> probes;
  for (size_t mib : sizes_mib) probes.push_back(std::make_unique<moe::tools::ReadBandwidthProbe>(pool, mib << 20));
  std::vector<std::vector<double>> best(sizes_mib.size());
  for (int r = 0; r < rounds; ++r)
    for (size_t k = 0; k < probes.size(); ++k) {
      const size_t i = (k + static_cast<size_t>(r)) % probes.size();  // each round starts one size further on
      best[i].push_back(probes[i]->best(3) / 1e9);
    }
  const size_t cache_mib = moe::tools::largest_cache_bytes() >> 20;
  std::printf("largest cache (sysfs): %zu MiB | %d thread%s | %d rounds, each a best of 3 passes\n", cache_mib, threads,
              threads == 1 ? "" : "s", rounds);
  std::printf("| probe MiB | x largest cache | GB/s, median (range) |\n|---:|---:|---:|\n");
  const double cache = static_cast<double>(cache_mib);
  for (size_t i = 0; i < sizes_mib.size(); ++i) {
    const double median = moe::tools::median(best[i]);
    const auto [low, high] = std::minmax_element(best[i].begin(), best[i].end());
    if (*low == 0) std::printf("| %zu | - | no memory for the probe |\n", sizes_mib[i]);
    else if (cache > 0)
      std::printf("| %zu | %.0f | %.1f (%.1f-%.1f) |\n", sizes_mib[i], sizes_mib[i] / cache, median, *low, *high);
    else std::printf("| %zu | - | %.1f (%.1f-%.1f) |\n", sizes_mib[i], median, *low, *high);
  }
}
