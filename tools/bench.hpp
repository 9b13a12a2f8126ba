// `moe_infer --bench`: the latency figures a user measures on their own board, and the
// bandwidth roofline they are judged against. Tools code (may allocate; never inside the
// timed generation).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "moe/engine.hpp"
#include "moe/generate.hpp"
#include "moe/model_file.hpp"
#include "moe/sampler.hpp"
#include "platform/mapped_file.hpp"
#include "platform/thread_pool.hpp"

namespace moe::tools {

// Weight bytes one decoded token reads: every matrix and vector it multiplies by, one
// row of each embedding table, and top_k of the n_experts experts of each layer (their
// average size: which k varies by token).
inline double active_weight_bytes_per_token(const ModelFile& file) {
  const ModelConfig& c = file.config();
  double bytes = 0;
  const int n = static_cast<int>(file.model().tensors()->size());
  for (int i = 0; i < n; ++i) {
    const fb::Tensor& t = file.tensor(i);
    const TensorBytes tb = file.bytes(i);  // inside the FlatBuffer or after it (format version 3)
    double b = static_cast<double>(tb.bytes) + 4.0 * static_cast<double>(tb.scale_count);
    const auto role = static_cast<TensorRole>(t.role());
    if (role == TensorRole::token_embedding || role == TensorRole::position_embedding) b /= t.shape()->Get(0);
    if (t.expert() >= 0) b *= static_cast<double>(c.top_k) / c.n_experts;
    bytes += b;
  }
  return bytes;
}

// The largest CPU cache the kernel reports for this machine (its last level; Linux
// sysfs, cpu0's view), 0 where it reports none. A probe buffer below
// kProbeCacheMultiple times it is partly read from that cache each pass, so it reads
// faster than memory (bench/README.md, "The probe's size").
inline constexpr size_t kProbeCacheMultiple = 8;
inline size_t largest_cache_bytes() {
  size_t largest = 0;
  for (int i = 0; i < 16; ++i) {
    char path[80];
    std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
    FILE* f = std::fopen(path, "r");
    if (f == nullptr) continue;
    unsigned long size = 0;
    char unit = 0;
    if (std::fscanf(f, "%lu%c", &size, &unit) >= 1)
      largest = std::max(largest, static_cast<size_t>(size) << (unit == 'K' ? 10 : unit == 'M' ? 20 : 0));
    std::fclose(f);
  }
  return largest;
}

// Read bandwidth of the pool's cores: each thread sums its share of a buffer far larger
// than the caches as four far-apart streams (one sequential stream reads less: bench/
// README.md). The buffer asks for huge pages, as MappedFile::read's weights do, so the
// roofline is the best the machine reads. The buffer is kept, so that passes can run
// between a benchmark's own (the paired roofline, run_bench).
class ReadBandwidthProbe {
 public:
  ReadBandwidthProbe(platform::ThreadPool& pool, size_t bytes)
      : workers_(pool.workers()),
        n_(bytes / sizeof(float) / 256 * 256),
        buf_(static_cast<float*>(moe::allocate_in_huge_pages(n_ * sizeof(float))), [](float* f) { std::free(f); }) {
    if (!buf_) return;  // no memory for the probe: no roofline (printed as 0)
    for (size_t i = 0; i < n_; ++i) buf_[i] = static_cast<float>(i & 1023);  // touch every page
  }

  // One pass over the buffer, all threads: bytes per second (0 without a buffer).
  double pass() {
    if (!buf_) return 0;
    Pass p{buf_.get(), n_, {}};
    const auto t0 = std::chrono::steady_clock::now();
    workers_.run(workers_.pool, &Pass::part, &p, Workers::kPoolParts);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int i = 0; i < workers_.threads; ++i) sink_ = sink_ + p.sums[i];
    const size_t parts = static_cast<size_t>(workers_.threads);
    return static_cast<double>(n_ / 256 / parts * 256 * parts * sizeof(float)) / s;
  }
  double best(int reps) {
    double b = 0;
    for (int r = 0; r < reps; ++r) b = std::max(b, pass());
    return b;
  }

 private:
  struct Pass {
    const float* buf;
    size_t n;
    float sums[256];
    static void part(void* ctx, int part, int parts) {
      auto& p = *static_cast<Pass*>(ctx);
      const size_t share = p.n / 256 / static_cast<size_t>(parts) * 256, quarter = share / 4;
      const float* s = p.buf + share * static_cast<size_t>(part);
#if MOE_SIMD
      using kernels::simd::fbatch, kernels::simd::W;
      fbatch a0(0.f), a1(0.f), a2(0.f), a3(0.f);
      for (size_t i = 0; i < quarter; i += W) {
        a0 += fbatch::load_aligned(s + i);
        a1 += fbatch::load_aligned(s + quarter + i);
        a2 += fbatch::load_aligned(s + 2 * quarter + i);
        a3 += fbatch::load_aligned(s + 3 * quarter + i);
      }
      p.sums[part] = xsimd::hadd((a0 + a1) + (a2 + a3));
#else
      float a[4] = {};
      for (size_t i = 0; i < quarter; ++i)
        for (int k = 0; k < 4; ++k) a[k] += s[static_cast<size_t>(k) * quarter + i];
      p.sums[part] = a[0] + a[1] + a[2] + a[3];
#endif
    }
  };
  Workers workers_;
  size_t n_;
  std::unique_ptr<float[], void (*)(float*)> buf_;
  volatile float sink_ = 0;
};

struct BenchOptions {
  int prompt = 64;   // pp: prompt tokens; tg: generated after a prompt of this length
  int tokens = 128;  // tg: tokens generated
  int reps = 5;
  ReadBandwidthProbe* probe = nullptr;  // with it, run_bench measures the rooflines (without: 0)
  int paired_reps = 3;                  // tg runs of the paired roofline (0: none)
};

struct BenchResult {
  double prefill_tok_s = 0, decode_tok_s = 0;  // medians: pp from an empty cache; tg after the prompt
  double prefill_min = 0, prefill_max = 0, decode_min = 0, decode_max = 0;
  double tg_empty_tok_s = 0, tg_empty_min = 0, tg_empty_max = 0;  // tg from an empty cache, as llama-bench
  double bytes_per_token = 0;
  double bandwidth = 0;          // bytes/s: the probe's best of five passes, before the runs
  double roofline_fraction = 0;  // bytes_per_token * decode_tok_s / bandwidth
  // The paired roofline: `paired_reps` more tg runs, each against the better of the probe
  // passes just before and just after it (a shared machine's bandwidth moves from second
  // to second); the median fraction and its range, and the median of those bandwidths.
  double paired_fraction = 0, paired_fraction_min = 0, paired_fraction_max = 0, paired_bandwidth = 0;
  // The KV cache tg's tokens read on average (each attends to every cached position up
  // to its own): also bytes a decoded token must read. The two fractions above over
  // weights and cache together; at long contexts the cache outweighs the weights.
  double kv_bytes_per_token = 0, roofline_fraction_with_kv = 0, paired_fraction_with_kv = 0;
};

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// pp: reset, prefill `prompt` tokens; tg: then decode `tokens` greedily. And tg as
// llama-bench runs it: reset, then `tokens` single-token decodes from an empty cache.
// One untimed warm-up of each first. Token ids cycle through the vocabulary
// (random-weight benchmark models have no text).
template <class EngineT>
Error run_bench(EngineT& engine, const ModelFile& file, const BenchOptions& o, BenchResult& r) {
  using Clock = std::chrono::steady_clock;
  constexpr int V = EngineT::config.vocab_size;
  std::vector<int32_t> prompt(static_cast<size_t>(o.prompt));
  for (int i = 0; i < o.prompt; ++i) prompt[static_cast<size_t>(i)] = (i * 7 + 1) % V;
  auto greedy = std::make_unique<Sampler<V>>(SamplingParams{0.f, 0, 1.f, 0});
  const auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  // From an empty cache: the prompt, then `tokens` generated greedily (pp and tg, in s).
  const auto prompt_then_tokens = [&](double& pp_s, double& tg_s) {
    engine.reset();
    const auto t0 = Clock::now();
    if (Error e = engine.prefill(prompt.data(), o.prompt)) return e;
    const auto t1 = Clock::now();
    int generated = 0;
    if (Error e = generate(engine, *greedy, o.tokens + 1, [&](int32_t) { return ++generated <= o.tokens; })) return e;
    pp_s = seconds(t0, t1), tg_s = seconds(t1, Clock::now());
    return Error::none();
  };
  r.bandwidth = o.probe != nullptr ? o.probe->best(5) : 0;
  std::vector<double> pp, tg, tg_empty;
  for (int rep = -1; rep < o.reps; ++rep) {  // rep -1: the warm-up
    double pp_s = 0, tg_s = 0;
    if (Error e = prompt_then_tokens(pp_s, tg_s)) return e;
    engine.reset();
    const auto t3 = Clock::now();
    for (int i = 0; i < o.tokens; ++i)
      if (Error e = engine.decode((i * 7 + 1) % V)) return e;
    const auto t4 = Clock::now();
    if (rep < 0) continue;
    pp.push_back(o.prompt / pp_s);
    tg.push_back(o.tokens / tg_s);
    tg_empty.push_back(o.tokens / seconds(t3, t4));
  }
  r.prefill_tok_s = median(pp);
  r.decode_tok_s = median(tg);
  r.prefill_min = *std::min_element(pp.begin(), pp.end());
  r.prefill_max = *std::max_element(pp.begin(), pp.end());
  r.decode_min = *std::min_element(tg.begin(), tg.end());
  r.decode_max = *std::max_element(tg.begin(), tg.end());
  r.tg_empty_tok_s = median(tg_empty);
  r.tg_empty_min = *std::min_element(tg_empty.begin(), tg_empty.end());
  r.tg_empty_max = *std::max_element(tg_empty.begin(), tg_empty.end());
  r.bytes_per_token = active_weight_bytes_per_token(file);
  r.roofline_fraction = r.bandwidth > 0 ? r.bytes_per_token * r.decode_tok_s / r.bandwidth : 0;
  double positions = 0;  // tg's token i is at position prompt + i: it sees prompt + i + 1 (at most the context)
  for (int i = 0; i < o.tokens; ++i) positions += std::min(o.prompt + i + 1, EngineT::config.max_context);
  r.kv_bytes_per_token =
      o.tokens > 0 ? positions / o.tokens * static_cast<double>(EngineT::kv_bytes_per_position()) : 0;
  const double with_kv = r.bytes_per_token > 0 ? (r.bytes_per_token + r.kv_bytes_per_token) / r.bytes_per_token : 1;
  r.roofline_fraction_with_kv = r.roofline_fraction * with_kv;
  if (o.probe == nullptr || o.paired_reps < 1) return Error::none();
  // The paired roofline, after the figures above so that the probe's passes (which push
  // the weights out of the caches) do not touch them.
  std::vector<double> fractions, bandwidths;
  double before = o.probe->pass();
  for (int rep = 0; rep < o.paired_reps && before > 0; ++rep) {
    double pp_s = 0, tg_s = 0;
    if (Error e = prompt_then_tokens(pp_s, tg_s)) return e;
    const double after = o.probe->pass(), bandwidth = std::max(before, after);
    fractions.push_back(r.bytes_per_token * o.tokens / tg_s / bandwidth);
    bandwidths.push_back(bandwidth);
    before = after;
  }
  if (fractions.empty()) return Error::none();
  r.paired_fraction = median(fractions);
  r.paired_fraction_min = *std::min_element(fractions.begin(), fractions.end());
  r.paired_fraction_max = *std::max_element(fractions.begin(), fractions.end());
  r.paired_bandwidth = median(bandwidths);
  r.paired_fraction_with_kv = r.paired_fraction * with_kv;
  return Error::none();
}

}  // namespace moe::tools
