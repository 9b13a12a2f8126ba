// Kernel benchmarks: each SIMD kernel next to its scalar reference in the same run, so
// the ratio is measured on the same machine at the same moment.
//   ./build/release/bench/bench_kernels --benchmark_filter=linear
// Counters: weight_GB/s = weight bytes streamed per second; GFLOP/s = 2*rows*cols*tokens.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "moe/kernels/attention.hpp"
#include "moe/kernels/linear.hpp"
#include "moe/kernels/topk.hpp"

namespace {

using namespace moe;

struct Weights {
  std::vector<uint8_t> data;
  std::vector<float> scales;
  Matrix m;
  Weights(int rows, int cols, DType dtype, int group) {
    std::mt19937 rng(1);
    data.resize(static_cast<size_t>(rows) * cols * dtype_bytes(dtype));
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
  }
  size_t bytes() const { return data.size() + scales.size() * sizeof(float); }
};

template <class K>
void linear(benchmark::State& state, DType dtype, int group) {
  const int rows = static_cast<int>(state.range(0)), cols = static_cast<int>(state.range(1)), tokens = static_cast<int>(state.range(2));
  Weights w(rows, cols, dtype, group);
  std::vector<float> x(static_cast<size_t>(tokens) * cols, 0.5f), y(static_cast<size_t>(tokens) * rows);
  for (auto _ : state) {
    kernels::linear(K{}, w.m, x.data(), tokens, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["weight_GB/s"] =
      benchmark::Counter(static_cast<double>(w.bytes()) * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * cols * tokens * static_cast<double>(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
}

// Shapes: Shakespeare model expert (512x128, 128x512), mixtral-tiny-a expert (128x64),
// a larger expert (1408x512); 1 token (decode) and 16 (a prefill chunk).
void shapes(benchmark::internal::Benchmark* b) {
  for (auto rc : std::vector<std::pair<int, int>>{{128, 64}, {512, 128}, {128, 512}, {1408, 512}})
    for (int tokens : {1, 16}) b->Args({rc.first, rc.second, tokens});
}

#define MOE_LINEAR_BENCH(K, name, dtype, group)                                                      \
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
#endif

template <class K>
void BM_attention(benchmark::State& state) {
  const int n_pos = static_cast<int>(state.range(0)), head_dim = static_cast<int>(state.range(1)), stride = 4 * head_dim;
  std::vector<float> keys(static_cast<size_t>(n_pos) * stride, 0.01f), values(keys.size(), 0.02f), q(static_cast<size_t>(head_dim), 0.1f);
  std::vector<float> scores(static_cast<size_t>(n_pos)), out(static_cast<size_t>(head_dim));
  for (auto _ : state) {
    kernels::attention(K{}, q.data(), keys.data(), values.data(), n_pos, head_dim, stride, 0.125f, scores.data(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n_pos);
}
BENCHMARK(BM_attention<kernels::Scalar>)->ArgsProduct({{32, 128, 1024}, {16, 64}});
#if MOE_SIMD
BENCHMARK(BM_attention<kernels::Simd>)->ArgsProduct({{32, 128, 1024}, {16, 64}});
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
}
BENCHMARK(BM_router_topk<kernels::Scalar>)->ArgsProduct({{4, 8, 64}, {1, 2, 8}});
#if MOE_SIMD
BENCHMARK(BM_router_topk<kernels::Simd>)->ArgsProduct({{4, 8, 64}, {1, 2, 8}});
#endif

}  // namespace

BENCHMARK_MAIN();
