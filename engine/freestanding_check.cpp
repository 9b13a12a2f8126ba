// Compiled with -fno-exceptions -fno-rtti (and once with MOE_FORCE_SCALAR, the
// Cortex-M path): proves the engine core needs neither. Never run; it only has to build.
#include "moe/engine.hpp"
#include "moe/generate.hpp"
#include "moe/sampler.hpp"

namespace {
constexpr moe::ModelConfig kLlama = moe::config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
constexpr moe::ModelConfig kClassic = moe::config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");
moe::Engine<kLlama> llama_engine;
moe::Engine<kClassic> classic_engine;
}  // namespace

int freestanding_generate(const void* data, unsigned long size, int n) {
  moe::ModelFile file;
  if (moe::ModelFile::open(data, size, file)) return -1;
  moe::Sampler<kClassic.vocab_size> sampler(moe::SamplingParams{0.f, 0, 1.f, 1});
  if (classic_engine.load(file)) return -1;
  const int32_t first = 0;
  if (classic_engine.prefill(&first, 1)) return -1;
  int count = 0;
  (void)moe::generate(classic_engine, sampler, n, [&](int32_t) { return ++count < n; });
  return count + (llama_engine.loaded() ? 1 : 0);
}
