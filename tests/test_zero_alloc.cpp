// The engine never allocates. This binary replaces malloc and friends (glibc allows it:
// libstdc++'s operator new comes here too) with counting versions, converts the fixtures
// to .moe files, maps them, and counts every allocation from opening the mapped buffer
// through long generations with sampling, window slides and expert-capacity re-encodes,
// error paths included. Built without sanitizers: ASan brings its own malloc.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "converter/atomic_file.hpp"
#include "converter/converter.hpp"
#include "converter/tokenizer_json.hpp"
#include "moe/engine.hpp"
#include "moe/generate.hpp"
#include "moe/model_file.hpp"
#include "moe/sampler.hpp"
#include "moe/text/bpe_check.hpp"
#include "moe/text/stream_decoder.hpp"
#include "platform/mapped_file.hpp"
#include "platform/thread_pool.hpp"

namespace {
std::atomic<long> g_allocations{0};
std::atomic<bool> g_counting{false};
void note_allocation() {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void __libc_free(void*);

void* malloc(size_t n) {
  note_allocation();
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) {
  note_allocation();
  return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) {
  note_allocation();
  return __libc_realloc(p, n);
}
void* memalign(size_t alignment, size_t n) {
  note_allocation();
  return __libc_memalign(alignment, n);
}
void* aligned_alloc(size_t alignment, size_t n) {
  note_allocation();
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, size_t alignment, size_t n) {
  note_allocation();
  *out = __libc_memalign(alignment, n);
  return *out ? 0 : ENOMEM;
}
void free(void* p) { __libc_free(p); }
}

namespace moe {
namespace {

constexpr ModelConfig kMixtral = config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
constexpr ModelConfig kMakemoe = config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");

// Static storage, as on a microcontroller: constructing them allocates nothing either.
Engine<kMixtral> g_mixtral;
Engine<kMakemoe> g_makemoe;
Engine<kMakemoe, kernels::Scalar> g_makemoe_scalar;
constexpr ModelConfig kQwen2 = config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64");
constexpr ModelConfig kGranite = config_from_key("llama-d64-l2-h4-kv2-hd16-e8-k2-f32-v256-c128");
constexpr ModelConfig kOlmoe = config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f48-v256-c128-qkw");
Engine<kQwen2> g_qwen2;
Engine<kGranite> g_granite;
Engine<kOlmoe, kernels::Best, default_prefill_chunk(kOlmoe), KvCache::f16> g_olmoe_f16kv;

// The fixture converted (moe_convert's library), written to a file that is then mapped.
std::filesystem::path convert_fixture(const char* fixture, const char* out_name, double capacity_factor = -1.,
                                      DType experts = DType::i8) {
  const auto out =
      std::filesystem::temp_directory_path() / (std::string("moe_zero_alloc_") + std::to_string(getpid()) + out_name);
  converter::ConvertOptions options;
  options.capacity_factor = capacity_factor;
  options.recipe.experts = experts;
  const auto bytes =
      converter::convert_checkpoint(std::string(MOE_SOURCE_DIR) + "/tests/fixtures/" + fixture, options).bytes;
  converter::write_file_atomically(out, bytes.data(), bytes.size());
  return out;
}

struct Counting {
  Counting() {
    g_allocations = 0;
    g_counting = true;
  }
  ~Counting() { g_counting = false; }
  long count() const { return g_allocations.load(); }
};

TEST(ZeroAllocation, TheCounterCounts) {
  Counting c;
  auto* v = new std::vector<int>(100);
  void* p = std::malloc(10);
  const long seen = c.count();
  std::free(p);
  delete v;
  EXPECT_GE(seen, 3);  // the vector object, its buffer, the malloc
}

template <class EngineT>
long allocations_over_a_generation(const std::filesystem::path& model, EngineT& engine,
                                   const std::vector<int32_t>& prompt, int tokens, int rounds) {
  MappedFile map;
  EXPECT_TRUE(MappedFile::open(model.c_str(), map).ok());
  std::filesystem::remove(model);
  constexpr int V = EngineT::config.vocab_size;
  Sampler<V> sampler(SamplingParams{0.8f, 20, 0.9f, 7});
  Counting counting;
  ModelFile file;
  EXPECT_TRUE(ModelFile::open(map.data(), map.size(), file).ok());
  EXPECT_TRUE(engine.load(file).ok());
  long generated = 0;
  for (int r = 0; r < rounds; ++r) {
    engine.reset();
    EXPECT_TRUE(engine.prefill(prompt.data(), static_cast<int>(prompt.size())).ok());
    const Error stop = generate(engine, sampler, tokens, [&](int32_t) {
      ++generated;
      return true;
    });
    EXPECT_TRUE(stop.ok() || stop.code == ErrorCode::context_full) << stop.what();
    // Error paths format their messages into the Error value, not onto the heap.
    const int32_t bad = V + 5;
    EXPECT_EQ(engine.prefill(&bad, 1).code, ErrorCode::bad_token);
  }
  EXPECT_GT(generated, 0);
  return counting.count();
}

TEST(ZeroAllocation, LlamaFamilyWholeGeneration) {
  const auto model = convert_fixture("mixtral-tiny-a", "mix.moe");
  EXPECT_EQ(allocations_over_a_generation(model, g_mixtral, {1, 5, 9, 12}, 200, 5), 0);  // runs into context_full
}

// int4 experts (their own activation quantization, with its sums), with workers.
TEST(ZeroAllocation, Int4ExpertsWithWorkers) {
  const auto model = convert_fixture("mixtral-tiny-a", "mix4.moe", -1., DType::q4);
  platform::ThreadPool pool(2);
  g_mixtral.set_workers(pool.workers(), 0);
  EXPECT_EQ(allocations_over_a_generation(model, g_mixtral, {1, 5, 9, 12}, 200, 3), 0);
  g_mixtral.set_workers(Workers{});
}

// Worker threads are started with the pool, before counting; handing every product's
// rows to them (however small) allocates nothing, in prefill or decode.
TEST(ZeroAllocation, LlamaFamilyWithWorkerThreads) {
  for (int threads : {2, 3}) {  // 2 divides top_k: experts side by side (decode and prefill); 3 splits rows
    const auto model = convert_fixture("mixtral-tiny-a", "mixw.moe");
    platform::ThreadPool pool(threads);
    g_mixtral.set_workers(pool.workers(), 0);
    // A prompt long enough to route to all four experts (prefill's side by side needs two per worker).
    EXPECT_EQ(allocations_over_a_generation(model, g_mixtral, {1, 5, 9, 12, 40, 3, 77, 20, 21, 60, 2, 8, 13}, 200, 3),
              0)
        << threads << " threads";
    g_mixtral.set_workers(Workers{});
  }
}

// The Hugging Face families' parts (shared expert, biases, q/k norms, multipliers, the f16
// KV cache), with workers: nothing allocated either.
TEST(ZeroAllocation, FamiliesWithWorkersAndF16KvCache) {
  platform::ThreadPool pool(2);
  g_qwen2.set_workers(pool.workers(), 0);
  EXPECT_EQ(allocations_over_a_generation(convert_fixture("qwen2moe-tiny-a", "q2.moe"), g_qwen2, {3, 1, 4}, 200, 2), 0);
  g_qwen2.set_workers(Workers{});
  EXPECT_EQ(allocations_over_a_generation(convert_fixture("granitemoe-tiny-a", "g.moe"), g_granite, {3, 1, 4}, 200, 2),
            0);
  EXPECT_EQ(allocations_over_a_generation(convert_fixture("olmoe-tiny-a", "o.moe"), g_olmoe_f16kv, {3, 1, 4}, 200, 2),
            0);
}

TEST(ZeroAllocation, ClassicFamilyWithWindowSlidesAndCapacity) {
  const auto model = convert_fixture("makemoe-tiny", "mk.moe");
  // 300 tokens: each past the 16th slides the window (a whole window's forward pass);
  // hundreds of slides per round (1,000, more of the same slides, took 69 s under qemu-arm).
  EXPECT_EQ(allocations_over_a_generation(model, g_makemoe, {30, 27, 25, 17, 27, 10}, 300, 2), 0);
  const auto scalar = convert_fixture("makemoe-tiny", "mk0.moe", 0., DType::f16);
  EXPECT_EQ(allocations_over_a_generation(scalar, g_makemoe_scalar, {30, 27}, 300, 2), 0);
}

// A real tokenizer's encode and streaming decode, over buffers made before: checking the
// tables, cutting out added tokens, NFC, the pre-tokenizer regex, merging, byte fallback,
// decoding split characters, and the error paths (invalid UTF-8, too many ids).
TEST(ZeroAllocation, TokenizerEncodeAndStreamingDecode) {
  for (const char* name : {"mistral", "qwen3"}) {
    const std::string dir = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/tokenizers/" + name;
    const std::vector<uint8_t> buffer = converter::bpe_tokenizer_buffer(converter::read_hf_tokenizer(dir, 1 << 20));
    const std::string text =
        "<|im_start|>user\nHello  world, I'm e\u0301 \xf0\x9d\x94\x98 \xe4\xb8\xad\xe6\x96\x87 42\n\n\t<s> end";
    const std::string bad = "broken \xff";
    std::vector<uint8_t> scratch(1 << 22);
    std::vector<int32_t> ids(256);
    std::vector<char> out(4096);
    Counting counting;
    text::BpeTokenizer tok;
    ASSERT_FALSE(text::check_bpe_tokenizer(flatbuffers::GetRoot<fb::Tokenizer>(buffer.data()), 1 << 20, tok));
    ASSERT_LE(tok.encode_scratch_bytes(text.size()), scratch.size());
    int n = 0;
    for (int round = 0; round < 3; ++round) {
      ASSERT_FALSE(tok.encode(text.data(), text.size(), true, ids.data(), 256, n, scratch.data(), scratch.size()));
      text::StreamDecoder d(tok, true, false);
      for (int i = 0; i < n; ++i) ASSERT_GE(d.put(ids[static_cast<size_t>(i)], out.data(), out.size()), 0);
      ASSERT_GE(d.finish(out.data(), out.size()), 0);
      EXPECT_TRUE(tok.encode(bad.data(), bad.size(), true, ids.data(), 256, n, scratch.data(), scratch.size()));
      EXPECT_TRUE(tok.encode(text.data(), text.size(), true, ids.data(), 3, n, scratch.data(), scratch.size()));
    }
    EXPECT_EQ(counting.count(), 0) << name;
  }
}

// Soak (ctest label `soak`; MOE_SOAK_TOKENS overrides the 1,000,000): a device that
// generates without end. Sampling on; each time the llama model's context fills, the
// engine is reset and re-prefilled with the last 32 tokens, as moe_infer-style loops do.
// Asserted: zero heap allocations, every logit finite, every token inside the
// vocabulary. Reported, not asserted: milliseconds per 10,000 tokens, first to last.
TEST(Soak, MillionTokensAcrossContextWraps) {
  const char* env = std::getenv("MOE_SOAK_TOKENS");
  const long total = env ? std::atol(env) : 1'000'000;
  const auto model = convert_fixture("mixtral-tiny-a", "soak.moe");
  MappedFile map;
  ASSERT_TRUE(MappedFile::open(model.c_str(), map).ok());
  std::filesystem::remove(model);
  constexpr int V = kMixtral.vocab_size;
  constexpr int kKeep = 32;
  static int32_t history[kMixtral.max_context];
  std::vector<double> ms_per_block;
  ms_per_block.reserve(static_cast<size_t>(total / 10'000 + 1));  // before counting starts

  Counting counting;
  ModelFile file;
  ASSERT_TRUE(ModelFile::open(map.data(), map.size(), file).ok());
  ASSERT_TRUE(g_mixtral.load(file).ok());
  Sampler<V> sampler(SamplingParams{0.9f, 0, 0.95f, 11});
  int32_t token = 1;
  int used = 0;  // positions in the context
  long generated = 0, wraps = 0, bad_logits = 0, bad_ids = 0;
  ASSERT_TRUE(g_mixtral.prefill(&token, 1).ok());
  history[used++] = token;
  auto block_start = std::chrono::steady_clock::now();
  while (generated < total) {
    const float* logits = g_mixtral.logits();
    for (int i = 0; i < V; ++i) bad_logits += !std::isfinite(logits[i]);
    token = sampler.sample(logits);
    bad_ids += token < 0 || token >= V;
    if (++generated % 10'000 == 0) {
      const auto now = std::chrono::steady_clock::now();
      ms_per_block.push_back(std::chrono::duration<double, std::milli>(now - block_start).count());
      block_start = now;
    }
    if (used == kMixtral.max_context) {  // wrap: keep the most recent tokens
      g_mixtral.reset();
      ASSERT_TRUE(g_mixtral.prefill(history + used - kKeep, kKeep).ok());
      std::memmove(history, history + used - kKeep, kKeep * sizeof(int32_t));
      used = kKeep;
      ++wraps;
    }
    ASSERT_TRUE(g_mixtral.decode(token).ok());
    history[used++] = token;
  }
  const long allocations = counting.count();
  EXPECT_EQ(allocations, 0);
  EXPECT_EQ(bad_logits, 0);
  EXPECT_EQ(bad_ids, 0);
  EXPECT_GT(wraps, total / kMixtral.max_context);
  if (!ms_per_block.empty()) {
    std::vector<double> sorted = ms_per_block;
    std::sort(sorted.begin(), sorted.end());
    std::printf(
        "soak: %ld tokens, %ld context wraps, 0 allocations; ms per 10k tokens: first %.1f, last %.1f, min %.1f, "
        "median %.1f, max %.1f\n",
        generated, wraps, ms_per_block.front(), ms_per_block.back(), sorted.front(), sorted[sorted.size() / 2],
        sorted.back());
  }
}

}  // namespace
}  // namespace moe
