// Kernel benchmarks: each SIMD kernel next to its scalar reference in the same run, so
// the ratio is measured on the same machine at the same moment.
//   ./build/release/bench/bench_kernels --benchmark_filter=linear
// Counters: weight_GB/s = weight bytes streamed per second; GFLOP/s = 2*rows*cols*tokens;
// attention: kv_GB/s = cached keys and values read per second.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <new>
#include <random>
#include <utility>
#include <vector>

#include "moe/kernels/attention.hpp"
#include "moe/kernels/linear.hpp"
#include "moe/kernels/linear_q4.hpp"
#include "moe/kernels/linear_q8.hpp"
#include "moe/kernels/topk.hpp"
#include "moe/sampler.hpp"

namespace {

using namespace moe;

// 64-byte aligned storage, as the engine's weights (kTensorAlignment) and quantized
// activations are: a 64-byte load must not straddle two cache lines here either.
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  bool operator==(const CacheLineAllocator&) const = default;
};
template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

struct Weights {
  AlignedVector<uint8_t> data;
  std::vector<float> scales;
  Matrix m;
  Weights(int rows, int cols, DType dtype, int group) {
    std::mt19937 rng(1);
    data.resize(data_bytes(dtype, static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols)));
    for (auto& b : data) b = static_cast<uint8_t>(rng() & 0x3f);  // small finite values in every dtype
    m.data = data.data();
    m.dtype = dtype;
    m.rows = rows;
    m.cols = cols;
    if (dtype == DType::i8) {
      m.group_size = group > 0 ? group : cols;
      scales.assign(static_cast<size_t>(rows) * (cols / m.group_size), 0.01f);
      m.scales = scales.data();
    }
    if (dtype == DType::q4) {
      m.group_size = kQ4Block;
      const int blocks = cols / kQ4Block;  // every block scale 1/128 (normal: no denormal arithmetic)
      for (int r = 0; r < rows; ++r) {
        uint8_t* group = data.data() + static_cast<size_t>(r) * blocks * kQ4BlockBytes;
        for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
          const int g = q4_group_blocks(blocks, gi);
          for (int j = 0; j < g; ++j) group[2 * j] = 0x00, group[2 * j + 1] = 0x20;
          group += g * kQ4BlockBytes;
        }
      }
    }
  }
  size_t bytes() const { return data.size() + scales.size() * sizeof(float); }
};

// Weight bytes streamed and multiply-adds per second, for y = W x over `tokens` tokens.
void linear_counters(benchmark::State& state, const Weights& w, int tokens) {
  const double n = static_cast<double>(state.iterations());
  state.counters["weight_GB/s"] =
      benchmark::Counter(static_cast<double>(w.bytes()) * n / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * w.m.rows * w.m.cols * tokens * n / 1e9, benchmark::Counter::kIsRate);
}

template <class K>
void linear(benchmark::State& state, DType dtype, int group) {
  const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1)),
            tokens = static_cast<int>(state.range(2));
  Weights w(rows, cols, dtype, group);
  std::vector<float> x(static_cast<size_t>(tokens) * cols, 0.5f), y(static_cast<size_t>(tokens) * rows);
  for (auto _ : state) {
    kernels::linear(K{}, w.m, x.data(), tokens, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  linear_counters(state, w, tokens);
}

// int8 weights x int8 activations (the path the engine takes where kInt8Dot), with the
// activation quantization it pays per product included.
template <class K>
void linear_q8(benchmark::State& state, int group) {
  const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1)),
            tokens = static_cast<int>(state.range(2));
  Weights w(rows, cols, DType::i8, group);
  std::vector<float> x(static_cast<size_t>(tokens) * cols, 0.5f), y(static_cast<size_t>(tokens) * rows);
  AlignedVector<int8_t> q(x.size());
  std::vector<float> qs(x.size() / kernels::kActBlock);
  for (auto _ : state) {
    kernels::quantize_activations(K{}, x.data(), tokens, cols, q.data(), qs.data());
    kernels::linear_q8(K{}, w.m, q.data(), qs.data(), tokens, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  linear_counters(state, w, tokens);
}

// int4 weights x int8 activations (the engine's path for q4 where kInt8Dot), the
// activation quantization included.
template <class K>
void linear_q4(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1)),
            tokens = static_cast<int>(state.range(2));
  Weights w(rows, cols, DType::q4, 0);
  std::vector<float> x(static_cast<size_t>(tokens) * cols, 0.5f), y(static_cast<size_t>(tokens) * rows);
  AlignedVector<int8_t> q(x.size());
  std::vector<float> qs(x.size() / kernels::kActBlock);
  std::vector<int32_t> sums(qs.size());
  for (auto _ : state) {
    kernels::quantize_activations_q4(K{}, x.data(), tokens, cols, q.data(), qs.data(), sums.data());
    kernels::linear_q4(K{}, w.m, kernels::ActQ4{q.data(), qs.data(), sums.data()}, tokens, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  linear_counters(state, w, tokens);
}

// Shapes: Shakespeare model expert (512x128, 128x512), mixtral-tiny-a expert (128x64),
// bench-s (bench_e2e.sh) expert (512x256, 256x512) and attention (256x256, 128x256),
// bench-m expert (1408x512, 512x1408) and attention (512x512, 256x512); 1 token (decode),
// 2-3 (below the int8 prefill tile's threshold), 4 and 8 (an expert's share of a prefill
// chunk), 16 (an engine's default chunk) and 64 (moe_infer's chunk, which attention sees).
void shapes(benchmark::internal::Benchmark* b) {
  for (auto rc : std::vector<std::pair<int, int>>{{128, 64},
                                                  {512, 128},
                                                  {128, 512},
                                                  {512, 256},
                                                  {256, 512},
                                                  {256, 256},
                                                  {128, 256},
                                                  {1408, 512},
                                                  {512, 1408},
                                                  {512, 512},
                                                  {1024, 1024},  // granite-3.1-1b-a400m attention
                                                  {512, 1024}})
    for (int tokens : {1, 2, 3, 4, 6, 8, 16, 64}) b->Args({rc.first, rc.second, tokens});
}

#define MOE_LINEAR_BENCH(K, name, dtype, group)                                                    \
  void BM_linear_##name##_##K(benchmark::State& s) { linear<kernels::K>(s, DType::dtype, group); } \
  BENCHMARK(BM_linear_##name##_##K)->Apply(shapes);

MOE_LINEAR_BENCH(Scalar, f32, f32, 0)
MOE_LINEAR_BENCH(Scalar, f16, f16, 0)
MOE_LINEAR_BENCH(Scalar, i8_row, i8, 0)
MOE_LINEAR_BENCH(Scalar, i8_g32, i8, 32)
#if MOE_SIMD
MOE_LINEAR_BENCH(Simd, f32, f32, 0)
MOE_LINEAR_BENCH(Simd, f16, f16, 0)
MOE_LINEAR_BENCH(Simd, i8_row, i8, 0)
MOE_LINEAR_BENCH(Simd, i8_g32, i8, 32)
MOE_LINEAR_BENCH(Simd, i8_g64, i8, 64)
MOE_LINEAR_BENCH(Simd, q4, q4, 0)
#endif
MOE_LINEAR_BENCH(Scalar, q4, q4, 0)

void BM_linear_q4_q8act_Scalar(benchmark::State& s) { linear_q4<kernels::Scalar>(s); }
BENCHMARK(BM_linear_q4_q8act_Scalar)->Apply(shapes);
#if MOE_SIMD
void BM_linear_q4_q8act_Simd(benchmark::State& s) { linear_q4<kernels::Simd>(s); }
BENCHMARK(BM_linear_q4_q8act_Simd)->Apply(shapes);
#endif

#define MOE_LINEAR_Q8_BENCH(K, name, group)                                             \
  void BM_linear_##name##_##K(benchmark::State& s) { linear_q8<kernels::K>(s, group); } \
  BENCHMARK(BM_linear_##name##_##K)->Apply(shapes);

MOE_LINEAR_Q8_BENCH(Scalar, i8_row_q8act, 0)
#if MOE_SIMD
MOE_LINEAR_Q8_BENCH(Simd, i8_row_q8act, 0)
MOE_LINEAR_Q8_BENCH(Simd, i8_g32_q8act, 32)
#endif

#if MOE_SIMD
// Decode from memory: 256 MiB of matrices of one shape (far beyond the caches), one
// decode product per matrix, the rows' blocks read in order (one stream: the kernel
// before the multi-stream order) or as the kernels read them (block i of each quarter of
// the rows together for f32 with AVX-512, four streams; of each half otherwise, two). The
// two orders alternate matrix by matrix, so both see the same machine load; counters give
// each one's GB/s and their ratio.
//   ./build/release/bench/bench_kernels --benchmark_filter=decode_from_memory
void decode_from_memory(benchmark::State& state, DType dtype, bool q8) {
  using kernels::simd::W;
  const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1));
  const size_t one = data_bytes(dtype, static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols));
  std::vector<Weights> set;
  for (size_t total = 0; total < (size_t{256} << 20); total += one) set.emplace_back(rows, cols, dtype, 0);
  std::vector<float> x(static_cast<size_t>(cols), 0.5f), y(static_cast<size_t>(rows)),
      qs(static_cast<size_t>(cols) / kernels::kActBlock + 1);
  AlignedVector<int8_t> q(static_cast<size_t>(cols));
  if (q8) kernels::quantize_activations(kernels::Simd{}, x.data(), 1, cols, q.data(), qs.data());
  double seconds[2] = {0, 0}, bytes[2] = {0, 0};
  size_t next = 0;
  for (auto _ : state) {
    for (int order = 0; order < 2; ++order) {
      const Matrix& m = set[next++ % set.size()].m;
      const auto t0 = std::chrono::steady_clock::now();
      if (order == 1) {  // streams: the kernels as the engine calls them
        if (q8) kernels::linear_q8(kernels::Simd{}, m, q.data(), qs.data(), 1, y.data());
        else kernels::linear(kernels::Simd{}, m, x.data(), 1, y.data());
      } else {
        for (int r = 0; r + W <= rows; r += W) {
#if MOE_Q8_X86
          if (q8) {
            kernels::simd::q8_one_token_blocks<1>(
                m, q.data(), qs.data(), kernels::simd::row_offset_q8(q.data(), qs.data(), cols), &r, y.data());
            continue;
          }
#endif
          if (dtype == DType::f32) kernels::simd::one_token_blocks<1>(m, m.f32(), x.data(), y.data(), &r);
          else if (dtype == DType::f16) kernels::simd::one_token_blocks<1>(m, m.f16(), x.data(), y.data(), &r);
          else kernels::simd::one_token_blocks<1>(m, m.i8(), x.data(), y.data(), &r);
        }
      }
      benchmark::DoNotOptimize(y.data());
      benchmark::ClobberMemory();
      seconds[order] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      bytes[order] += static_cast<double>(one);
    }
  }
  state.counters["one_stream_GB/s"] = bytes[0] / seconds[0] / 1e9;
  state.counters["streams_GB/s"] = bytes[1] / seconds[1] / 1e9;
  state.counters["streams/one"] = (bytes[1] / seconds[1]) / (bytes[0] / seconds[0]);
}
// bench-s expert (512x256) and attention (256x256) in f32 and f16; bench-m expert
// (1408x512, 512x1408), bench-s expert and the real shapes' attention in int8, through
// the int8 x int8 kernel on x86.
void BM_decode_from_memory_f32(benchmark::State& s) { decode_from_memory(s, DType::f32, false); }
void BM_decode_from_memory_f16(benchmark::State& s) { decode_from_memory(s, DType::f16, false); }
#if MOE_Q8_X86
constexpr bool kX86Q8 = kernels::kInt8Dot;  // the int8 x int8 kernel with the two-stream order
#else
constexpr bool kX86Q8 = false;  // elsewhere int8 weights are compared through the widening kernel
#endif
void BM_decode_from_memory_i8(benchmark::State& s) { decode_from_memory(s, DType::i8, kX86Q8); }
BENCHMARK(BM_decode_from_memory_f32)->Args({512, 256})->Args({256, 256})->MinTime(2.0);
BENCHMARK(BM_decode_from_memory_f16)->Args({512, 256})->MinTime(2.0);
BENCHMARK(BM_decode_from_memory_i8)
    ->Args({1408, 512})
    ->Args({512, 1408})
    ->Args({512, 256})
    ->Args({1024, 1024})  // granite-3.1-1b-a400m attention
    ->Args({2048, 2048})  // OLMoE-1B-7B attention
    ->MinTime(2.0);

// int4 against int8 from memory: 256 MiB of each, one product per matrix through the
// engine's kernels (int8 activations where kInt8Dot, else f32), the two dtypes
// alternating; counters give each one's weight GB/s and products per second, and the
// ratio of products per second (int4 / int8). Decode: one token; prefill: an expert's
// share of a 64-token chunk (the third argument).
void from_memory_q4_vs_i8(benchmark::State& state, int tokens) {
  const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1));
  const DType dtypes[2] = {DType::i8, DType::q4};
  std::vector<Weights> set[2];
  size_t one[2];
  for (int d = 0; d < 2; ++d) {
    one[d] = data_bytes(dtypes[d], static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols));
    for (size_t total = 0; total < (size_t{256} << 20); total += one[d]) set[d].emplace_back(rows, cols, dtypes[d], 0);
  }
  const size_t n = static_cast<size_t>(tokens);
  std::vector<float> x(n * cols, 0.5f), y(n * rows), qs(n * cols / kernels::kActBlock + 1);
  AlignedVector<int8_t> q(n * cols), q4(q.size());
  std::vector<float> q4s(qs.size());
  std::vector<int32_t> q4sum(qs.size());
  kernels::quantize_activations(kernels::Simd{}, x.data(), tokens, cols, q.data(), qs.data());
  kernels::quantize_activations_q4(kernels::Simd{}, x.data(), tokens, cols, q4.data(), q4s.data(), q4sum.data());
  double seconds[2] = {0, 0}, count[2] = {0, 0};
  size_t next = 0;
  for (auto _ : state) {
    for (int d = 0; d < 2; ++d) {
      const Matrix& m = set[d][next % set[d].size()].m;
      const auto t0 = std::chrono::steady_clock::now();
      if (!kernels::kInt8Dot) kernels::linear(kernels::Simd{}, m, x.data(), tokens, y.data());
      else if (d == 0) kernels::linear_q8(kernels::Simd{}, m, q.data(), qs.data(), tokens, y.data());
      else
        kernels::linear_q4(kernels::Simd{}, m, kernels::ActQ4{q4.data(), q4s.data(), q4sum.data()}, tokens, y.data());
      benchmark::DoNotOptimize(y.data());
      benchmark::ClobberMemory();
      seconds[d] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      count[d] += 1;
    }
    ++next;
  }
  state.counters["i8_GB/s"] = count[0] * static_cast<double>(one[0]) / seconds[0] / 1e9;
  state.counters["q4_GB/s"] = count[1] * static_cast<double>(one[1]) / seconds[1] / 1e9;
  state.counters["q4/i8_speed"] = (count[1] / seconds[1]) / (count[0] / seconds[0]);
}
void BM_decode_from_memory_q4_vs_i8(benchmark::State& state) { from_memory_q4_vs_i8(state, 1); }
void BM_prefill_from_memory_q4_vs_i8(benchmark::State& state) {
  from_memory_q4_vs_i8(state, static_cast<int>(state.range(2)));
}
// bench-m's, granite-3.1-1b-a400m's, OLMoE-1B-7B's and bench-s's expert products.
BENCHMARK(BM_decode_from_memory_q4_vs_i8)
    ->Args({1408, 512})
    ->Args({512, 1408})
    ->Args({512, 1024})
    ->Args({1024, 512})
    ->Args({1024, 2048})
    ->Args({2048, 1024})
    ->Args({512, 256})
    ->MinTime(2.0);
// bench-m's and granite-3.1-1b-a400m's expert products (gate/up, down) at 16 tokens,
// OLMoE-1B-7B's at 8 (64 experts, top 8: a 64-token chunk gives each about 8), and at 2
// and 4 (its experts given few tokens: the row-wise tiles).
BENCHMARK(BM_prefill_from_memory_q4_vs_i8)
    ->Args({1408, 512, 16})
    ->Args({512, 1408, 16})
    ->Args({512, 1024, 16})
    ->Args({1024, 512, 16})
    ->Args({1024, 2048, 8})
    ->Args({2048, 1024, 8})
    ->Args({1024, 2048, 2})
    ->Args({1024, 2048, 4})
    ->Args({2048, 1024, 4})
    ->MinTime(2.0);
#endif

template <class K>
void BM_attention(benchmark::State& state) {
  const int n_pos = static_cast<int>(state.range(0)), head_dim = static_cast<int>(state.range(1));
  std::vector<float> keys(static_cast<size_t>(n_pos) * head_dim, 0.01f), values(keys.size(), 0.02f),
      q(static_cast<size_t>(head_dim), 0.1f);
  std::vector<float> scores(static_cast<size_t>(n_pos)), out(static_cast<size_t>(head_dim));
  for (auto _ : state) {
    kernels::attention(K{}, q.data(), keys.data(), values.data(), n_pos, head_dim, 0.125f, scores.data(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n_pos);
  // Keys and values of the head read once per call; a dot product and an axpy per position.
  state.counters["kv_GB/s"] =
      benchmark::Counter(2.0 * n_pos * head_dim * sizeof(float) * static_cast<double>(state.iterations()) / 1e9,
                         benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(4.0 * n_pos * head_dim * static_cast<double>(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_attention<kernels::Scalar>)->ArgsProduct({{32, 100, 128, 1024}, {16, 32, 64}});
#if MOE_SIMD
BENCHMARK(BM_attention<kernels::Simd>)->ArgsProduct({{32, 100, 128, 1024}, {16, 32, 64}});
#endif

// int8 activations for the products of one input (once per input, not per weight):
// the columns of granite's and OLMoE's model width, one token (decode) or 64.
template <class K>
void BM_quantize_activations(benchmark::State& state) {
  const int cols = static_cast<int>(state.range(0)), tokens = static_cast<int>(state.range(1));
  std::vector<float> x(static_cast<size_t>(tokens) * cols);
  std::mt19937 rng(5);
  for (auto& v : x) v = std::normal_distribution<float>()(rng);
  std::vector<int8_t> q(x.size());
  std::vector<float> scales(x.size() / kernels::kActBlock);
  for (auto _ : state) {
    kernels::quantize_activations(K{}, x.data(), tokens, cols, q.data(), scales.data());
    benchmark::DoNotOptimize(q.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * tokens * cols);  // columns quantized
}
BENCHMARK(BM_quantize_activations<kernels::Scalar>)->ArgsProduct({{1024, 2048}, {1, 64}});
#if MOE_SIMD
BENCHMARK(BM_quantize_activations<kernels::Simd>)->ArgsProduct({{1024, 2048}, {1, 64}});
#endif

template <class K>
void BM_router_topk(benchmark::State& state) {
  const int experts = static_cast<int>(state.range(0)), k = static_cast<int>(state.range(1));
  std::vector<float> logits(static_cast<size_t>(experts));
  std::mt19937 rng(3);
  for (auto& v : logits) v = std::normal_distribution<float>()(rng);
  int idx[8];
  float val[8];
  for (auto _ : state) {
    kernels::topk(K{}, logits.data(), experts, k, idx, val);
    benchmark::DoNotOptimize(idx);
  }
  state.SetItemsProcessed(state.iterations());  // tokens routed
}
BENCHMARK(BM_router_topk<kernels::Scalar>)->ArgsProduct({{4, 8, 64}, {1, 2, 8}});
#if MOE_SIMD
BENCHMARK(BM_router_topk<kernels::Simd>)->ArgsProduct({{4, 8, 64}, {1, 2, 8}});
#endif

// One token's draw at moe_infer's default sampling (temperature 0.8, top-p 0.95) over a
// real vocabulary (granite's, Qwen's), with logits ~ N(0, spread): spread 1 leaves most of
// the vocabulary in the nucleus, 5 a few hundred tokens. Beside it, the same scaling and
// softmax followed by a sort of the whole vocabulary, which is what the sampler did
// before it found the nucleus without one.
template <int V>
std::vector<float> spread_logits(double spread) {
  std::vector<float> logits(V);
  std::mt19937 rng(5);
  for (auto& v : logits) v = static_cast<float>(spread) * std::normal_distribution<float>()(rng);
  return logits;
}

template <int V>
void BM_sample_top_p(benchmark::State& state) {
  const auto logits = spread_logits<V>(static_cast<double>(state.range(0)));
  auto sampler = std::make_unique<Sampler<V>>(SamplingParams{0.8f, 0, 0.95f, 1});
  for (auto _ : state) benchmark::DoNotOptimize(sampler->sample(logits.data()));
  state.SetItemsProcessed(state.iterations());  // tokens drawn
}

template <int V>
void BM_sample_sort_vocabulary(benchmark::State& state) {
  const auto logits = spread_logits<V>(static_cast<double>(state.range(0)));
  std::vector<float> probs(V);
  std::vector<int32_t> order(V);
  for (auto _ : state) {
    for (int i = 0; i < V; ++i) probs[static_cast<size_t>(i)] = logits[static_cast<size_t>(i)] * (1.f / 0.8f);
    kernels::softmax(kernels::Scalar{}, probs.data(), V);
    for (int i = 0; i < V; ++i) order[static_cast<size_t>(i)] = i;
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return probs[static_cast<size_t>(a)] > probs[static_cast<size_t>(b)] ||
             (probs[static_cast<size_t>(a)] == probs[static_cast<size_t>(b)] && a < b);
    });
    benchmark::DoNotOptimize(order.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_sample_top_p<49155>)->Arg(1)->Arg(3)->Arg(5);
BENCHMARK(BM_sample_sort_vocabulary<49155>)->Arg(1)->Arg(3)->Arg(5);
BENCHMARK(BM_sample_top_p<151936>)->Arg(1)->Arg(3)->Arg(5);
BENCHMARK(BM_sample_sort_vocabulary<151936>)->Arg(1)->Arg(3)->Arg(5);

#if MOE_SIMD
// The machine's fp32 FMA peak: 12 independent register-resident accumulators (enough to
// hide FMA latency on any current core), the yardstick for the GFLOP/s counters above.
// Run with --benchmark_filter=fma_peak; threads 2 gives the two-core figure.
void BM_fma_peak(benchmark::State& state) {
  using kernels::simd::fbatch;
  fbatch a0(1.f), a1(1.1f), a2(1.2f), a3(1.3f), a4(1.4f), a5(1.5f), a6(1.6f), a7(1.7f), a8(1.8f), a9(1.9f), a10(2.f),
      a11(2.1f);
  const fbatch b(0.999999f), c(1e-7f);
  constexpr int kInner = 1000;
  for (auto _ : state) {
    for (int i = 0; i < kInner; ++i) {
      a0 = xsimd::fma(a0, b, c), a1 = xsimd::fma(a1, b, c), a2 = xsimd::fma(a2, b, c), a3 = xsimd::fma(a3, b, c);
      a4 = xsimd::fma(a4, b, c), a5 = xsimd::fma(a5, b, c), a6 = xsimd::fma(a6, b, c), a7 = xsimd::fma(a7, b, c);
      a8 = xsimd::fma(a8, b, c), a9 = xsimd::fma(a9, b, c), a10 = xsimd::fma(a10, b, c), a11 = xsimd::fma(a11, b, c);
    }
  }
  benchmark::DoNotOptimize(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
  state.counters["GFLOP/s"] = benchmark::Counter(
      24.0 * kernels::simd::W * kInner * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_fma_peak)->Threads(1)->Threads(2)->UseRealTime();
#endif

#if MOE_Q8_X86 && (defined(__AVX512VNNI__) || defined(__AVXVNNI__))
// The int8 dot-product instruction of the widest VNNI the build has, and a broadcast.
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
using Int8DotVec = __m512i;
Int8DotVec int8_dot(Int8DotVec acc, Int8DotVec u, Int8DotVec s) { return _mm512_dpbusd_epi32(acc, u, s); }
Int8DotVec int8_dot_bcast(int32_t v) { return _mm512_set1_epi32(v); }
#else
using Int8DotVec = __m256i;
Int8DotVec int8_dot(Int8DotVec acc, Int8DotVec u, Int8DotVec s) { return kernels::simd::dot4_q8(acc, u, s); }
Int8DotVec int8_dot_bcast(int32_t v) { return _mm256_set1_epi32(v); }
#endif

// The int8 dot-product instruction's rate (vpdpbusd: 64 lanes with AVX-512 VNNI, 32 with
// AVX-VNNI; builds without VNNI have none), 12 register-resident accumulators. kPer 0
// takes the second operand from a register; kPer k broadcasts it from memory once per k
// instructions. The turned int8 and q4 tiles broadcast a token's 4 columns once per
// instruction (kPer 1): this is the yardstick for their rate.
//   ./build/release/bench/bench_kernels --benchmark_filter=int8_dot_peak
template <int kPer>
void BM_int8_dot_peak(benchmark::State& state) {
  using V = Int8DotVec;
  alignas(64) int32_t xs[64];
  for (int i = 0; i < 64; ++i) xs[i] = 0x01010101 * (i % 7);
  V a0 = int8_dot_bcast(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0,
    a11 = a0;
  const V w0 = int8_dot_bcast(0x01020304), w1 = int8_dot_bcast(0x05060708);
  V reg = int8_dot_bcast(0x0a0b0c0d);
  constexpr int kInner = 1000;
  for (auto _ : state) {
    for (int i = 0; i < kInner; ++i) {
      const int32_t* x = xs + (i & 31);
      __asm__ volatile("" : "+v"(reg));  // an operand the compiler cannot see through
      const auto operand = [&](int k) { return kPer == 0 ? reg : int8_dot_bcast(x[k / (kPer > 0 ? kPer : 1)]); };
      a0 = int8_dot(a0, w0, operand(0)), a1 = int8_dot(a1, w1, operand(1)), a2 = int8_dot(a2, w0, operand(2));
      a3 = int8_dot(a3, w1, operand(3)), a4 = int8_dot(a4, w0, operand(4)), a5 = int8_dot(a5, w1, operand(5));
      a6 = int8_dot(a6, w0, operand(6)), a7 = int8_dot(a7, w1, operand(7)), a8 = int8_dot(a8, w0, operand(8));
      a9 = int8_dot(a9, w1, operand(9)), a10 = int8_dot(a10, w0, operand(10)), a11 = int8_dot(a11, w1, operand(11));
    }
    benchmark::DoNotOptimize(xs);
  }
  for (V v : {a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11}) a0 = int8_dot(a0, v, w0);
  benchmark::DoNotOptimize(a0);
  state.counters["dots/ns"] =
      benchmark::Counter(12.0 * kInner * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_int8_dot_peak<0>);
BENCHMARK(BM_int8_dot_peak<1>);
BENCHMARK(BM_int8_dot_peak<2>);
BENCHMARK(BM_int8_dot_peak<4>);

// The same instruction over kChains dependent chains (12 instructions a step, operands
// in registers): below the chains that cover its latency, each waits on its previous
// result. The yardstick for how many int32 sums a decode tile keeps per row
// (tile_group_q4's C).
//   ./build/release/bench/bench_kernels --benchmark_filter=int8_dot_chains
template <int kChains>
void BM_int8_dot_chains(benchmark::State& state) {
  using V = Int8DotVec;
  V acc[12];  // constant indices only (a fold over k), so the chains stay in registers
  const V w = int8_dot_bcast(0x01020304);
  V x = int8_dot_bcast(0x0a0b0c0d);
  constexpr int kInner = 1000;
  const auto steps = [&]<int... k>(std::integer_sequence<int, k...>) {
    ((acc[k] = int8_dot_bcast(0)), ...);
    for (auto _ : state)
      for (int i = 0; i < kInner; ++i) {
        __asm__ volatile("" : "+v"(x));
        ((acc[k % kChains] = int8_dot(acc[k % kChains], w, x)), ...);
      }
    V all = int8_dot_bcast(0);
    ((all = int8_dot(all, acc[k % kChains], w)), ...);
    return all;
  };
  V all = steps(std::make_integer_sequence<int, 12>{});
  benchmark::DoNotOptimize(all);
  state.counters["dots/ns"] =
      benchmark::Counter(12.0 * kInner * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_int8_dot_chains<1>);
BENCHMARK(BM_int8_dot_chains<2>);
BENCHMARK(BM_int8_dot_chains<4>);
BENCHMARK(BM_int8_dot_chains<6>);
BENCHMARK(BM_int8_dot_chains<12>);
#endif

}  // namespace

BENCHMARK_MAIN();
