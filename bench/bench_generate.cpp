// End-to-end latency on the fixture models, per recipe and kernel backend, in one run:
// decode (tokens/s generating after a prompt) and prefill (prompt tokens/s).
//   ./build/release/bench/bench_generate
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "converter/converter.hpp"
#include "moe/engine.hpp"
#include "moe/generate.hpp"
#include "moe/sampler.hpp"

namespace {

using namespace moe;

constexpr ModelConfig kMixtral = config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
constexpr ModelConfig kMakemoe = config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");

struct Model {
  std::vector<uint8_t> storage;
  const uint8_t* data;
  size_t size;
  ModelFile file;
};

Model* load(const char* fixture, DType experts, double capacity_factor = -1.) {
  converter::ConvertOptions o;
  o.recipe.experts = experts;
  o.recipe.attention = experts == DType::f32 ? DType::f32 : DType::f16;
  o.recipe.embeddings = o.recipe.attention;
  o.capacity_factor = capacity_factor;
  auto* m = new Model;
  const auto bytes = converter::convert_checkpoint(std::string(MOE_SOURCE_DIR) + "/tests/fixtures/" + fixture, o).bytes;
  m->storage.resize(bytes.size() + 64);
  auto* aligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(m->storage.data()) + 63) / 64 * 64);
  std::copy(bytes.begin(), bytes.end(), aligned);
  m->data = aligned;
  m->size = bytes.size();
  if (ModelFile::open(m->data, m->size, m->file)) std::abort();
  return m;
}

// Decode: after an 8-token prompt, generate `n` tokens greedily; items = generated tokens.
template <ModelConfig C, class K>
void decode(benchmark::State& state, const char* fixture, DType experts, double capacity_factor) {
  static Model* model = nullptr;
  model = load(fixture, experts, capacity_factor);
  auto engine = std::make_unique<Engine<C, K>>();
  if (engine->load(model->file)) std::abort();
  const int n = static_cast<int>(state.range(0));
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  for (auto _ : state) {
    engine->reset();
    (void)engine->prefill(prompt.data(), 8);
    Sampler<C.vocab_size> greedy(SamplingParams{0.f, 0, 1.f, 0});
    (void)generate(*engine, greedy, n, [](int32_t) { return true; });
    benchmark::DoNotOptimize(engine->logits());
  }
  state.SetItemsProcessed(state.iterations() * n);
  delete model;
}

template <ModelConfig C, class K>
void prefill(benchmark::State& state, const char* fixture, DType experts) {
  Model* model = load(fixture, experts, 0.);
  auto engine = std::make_unique<Engine<C, K>>();
  if (engine->load(model->file)) std::abort();
  const int n = static_cast<int>(state.range(0));
  std::vector<int32_t> prompt(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) prompt[static_cast<size_t>(i)] = i % C.vocab_size;
  for (auto _ : state) {
    engine->reset();
    (void)engine->prefill(prompt.data(), n);
    benchmark::DoNotOptimize(engine->logits());
  }
  state.SetItemsProcessed(state.iterations() * n);
  delete model;
}

#define MOE_DECODE(name, C, K, fixture, dtype, cap, n)                                                 \
  void BM_decode_##name(benchmark::State& s) { decode<C, kernels::K>(s, fixture, DType::dtype, cap); } \
  BENCHMARK(BM_decode_##name)->Arg(n)->Unit(benchmark::kMicrosecond);
#define MOE_PREFILL(name, C, K, fixture, dtype, n)                                                  \
  void BM_prefill_##name(benchmark::State& s) { prefill<C, kernels::K>(s, fixture, DType::dtype); } \
  BENCHMARK(BM_prefill_##name)->Arg(n)->Unit(benchmark::kMicrosecond);

// mixtral-tiny-a: decode 100 tokens after the prompt, prefill 64.
MOE_DECODE(mixtral_f32_scalar, kMixtral, Scalar, "mixtral-tiny-a", f32, -1., 100)
MOE_DECODE(mixtral_i8_scalar, kMixtral, Scalar, "mixtral-tiny-a", i8, -1., 100)
#if MOE_SIMD
MOE_DECODE(mixtral_f32_simd, kMixtral, Simd, "mixtral-tiny-a", f32, -1., 100)
MOE_DECODE(mixtral_f16_simd, kMixtral, Simd, "mixtral-tiny-a", f16, -1., 100)
MOE_DECODE(mixtral_i8_simd, kMixtral, Simd, "mixtral-tiny-a", i8, -1., 100)
MOE_PREFILL(mixtral_i8_simd, kMixtral, Simd, "mixtral-tiny-a", i8, 64)
#endif
MOE_PREFILL(mixtral_i8_scalar, kMixtral, Scalar, "mixtral-tiny-a", i8, 64)

// makemoe-tiny: exact (expert capacity, window re-encoded per token) vs KV cache.
#if MOE_SIMD
MOE_DECODE(makemoe_i8_simd_capacity, kMakemoe, Simd, "makemoe-tiny", i8, -1., 100)
MOE_DECODE(makemoe_i8_simd_kvcache, kMakemoe, Simd, "makemoe-tiny", i8, 0., 100)
#endif
MOE_DECODE(makemoe_i8_scalar_kvcache, kMakemoe, Scalar, "makemoe-tiny", i8, 0., 100)

}  // namespace

BENCHMARK_MAIN();
