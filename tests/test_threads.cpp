// The static thread pool and the engine's use of it: every part of every task runs
// exactly once (the pool's count of parts or the caller's), across sleeps and while a
// worker is held up; and an engine with 2 workers
// (experts side by side, in decode and in prefill) or 3 (rows split everywhere) computes
// the very same logits, bit for bit, as with one, for f32, int8 and int4 weights; and the
// split rule's units (WorkSplit).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <iterator>
#include <memory>
#include <thread>
#include <vector>

#include "moe/engine.hpp"
#include "platform/thread_pool.hpp"
#include "support/test_support.hpp"

namespace moe {
namespace {

struct Tally {
  std::atomic<int> runs[64] = {};
  std::atomic<int> wrong_parts{0};
  int expected_parts = 0;
  static void task(void* ctx, int part, int parts) {
    auto& t = *static_cast<Tally*>(ctx);
    if (parts != t.expected_parts || part < 0 || part >= parts) t.wrong_parts.fetch_add(1);
    else t.runs[part].fetch_add(1);
  }
};

TEST(ThreadPool, EveryPartRunsOncePerTask) {
  for (int threads : {1, 2, 3}) {
    for (int parts_per_thread : {1, 4}) {
      platform::ThreadPool pool(threads, parts_per_thread);
      const Workers w = pool.workers();
      ASSERT_EQ(w.threads, threads);
      Tally tally;
      tally.expected_parts = pool.parts();
      ASSERT_EQ(pool.parts(), threads == 1 ? 1 : threads * parts_per_thread);
      constexpr int kTasks = 5000;
      for (int i = 0; i < kTasks; ++i) {
        w.run(w.pool, &Tally::task, &tally, Workers::kPoolParts);
        // run() returns only when every part is done: the counts are exact here.
        for (int p = 0; p < pool.parts(); ++p)
          ASSERT_EQ(tally.runs[p].load(), i + 1) << "threads " << threads << " part " << p;
      }
      EXPECT_EQ(tally.wrong_parts.load(), 0);
    }
  }
}

TEST(ThreadPool, WakesWorkersThatFellAsleep) {
  platform::ThreadPool pool(3);
  const Workers w = pool.workers();
  Tally tally;
  tally.expected_parts = pool.parts();
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // past the spin: workers wait in the kernel
    w.run(w.pool, &Tally::task, &tally, Workers::kPoolParts);
  }
  for (int p = 0; p < pool.parts(); ++p) EXPECT_EQ(tally.runs[p].load(), 3);
}

// A task that gives its own count of parts (the engine's experts, one part each) gets
// exactly that many, each once, whatever the pool's threads and parts per thread, and
// tasks of different counts in turn do not mix.
TEST(ThreadPool, TheCallersCountOfPartsRunsEachOnce) {
  for (int threads : {1, 2, 3}) {
    for (int parts_per_thread : {1, 4}) {
      platform::ThreadPool pool(threads, parts_per_thread);
      const Workers w = pool.workers();
      constexpr int kCounts[] = {1, 2, 3, 8, 64, 5};
      Tally tallies[std::size(kCounts)];
      constexpr int kRounds = 2000;
      for (int i = 0; i < kRounds; ++i) {
        for (size_t c = 0; c < std::size(kCounts); ++c) {
          Tally& tally = tallies[c];
          tally.expected_parts = kCounts[c];
          w.run(w.pool, &Tally::task, &tally, kCounts[c]);
          for (int p = 0; p < kCounts[c]; ++p)
            ASSERT_EQ(tally.runs[p].load(), i + 1) << threads << " threads, " << kCounts[c] << " parts, part " << p;
        }
      }
      for (const Tally& tally : tallies) EXPECT_EQ(tally.wrong_parts.load(), 0);
    }
  }
}

// A worker that is held up inside a part (as when another process holds its core)
// leaves the other parts to the threads that are free: with 4 parts per thread, the
// caller runs all the rest while part `held` waits for it to finish them (a pool that
// gave each thread fixed parts would leave 3 of them to the held-up worker).
struct HeldUp {
  std::atomic<int> held{-1};  // the part that waits
  std::atomic<int> others_done{0};
  std::atomic<bool> caller_ran_all{false};
  std::thread::id caller;
  static void task(void* ctx, int part, int parts) {
    auto& h = *static_cast<HeldUp*>(ctx);
    int expected = -1;
    if (std::this_thread::get_id() != h.caller && h.held.compare_exchange_strong(expected, part)) {
      // A worker: wait until every other part has run elsewhere (bounded: a pool that
      // waited for this part instead would fail the test rather than hang it).
      for (int i = 0; i < 5000 && h.others_done.load() < parts - 1; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      h.caller_ran_all = h.others_done.load() == parts - 1;
      return;
    }
    h.others_done.fetch_add(1);
  }
};

// Both ways of counting parts: the pool's (2 threads, 4 parts each) and the caller's (8
// parts on a pool of one part per thread, as the engine runs a token's 8 experts).
TEST(ThreadPool, AHeldUpWorkerLeavesItsShareToTheOthers) {
  for (const auto& [parts_per_thread, parts] : {std::pair{4, Workers::kPoolParts}, {1, 8}}) {
    platform::ThreadPool pool(2, parts_per_thread);
    const Workers w = pool.workers();
    const int count = parts == Workers::kPoolParts ? pool.parts() : parts;
    ASSERT_EQ(count, 8);
    for (int i = 0; i < 20; ++i) {
      HeldUp h;
      h.caller = std::this_thread::get_id();
      w.run(w.pool, &HeldUp::task, &h, parts);
      if (h.held.load() < 0) {  // the worker never woke in time: the caller ran every part
        EXPECT_EQ(h.others_done.load(), count);
        continue;
      }
      EXPECT_TRUE(h.caller_ran_all.load()) << "the other parts waited for the held-up worker";
      EXPECT_EQ(h.others_done.load(), count - 1);
    }
  }
}

constexpr ModelConfig kMixtral = config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");

template <ModelConfig C = kMixtral>
void expect_same_logits_with_workers(const test::AlignedBuffer& buf) {
  using EngineT = Engine<C>;
  constexpr int V = C.vocab_size;
  ModelFile file;
  ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
  const std::vector<int32_t> prompt = {1, 5, 9, 12, 40, 3, 77, 20, 21, 60, 2, 8, 13, 50, 33, 7, 90, 11, 4};
  auto logits_of = [&](EngineT& engine) {
    std::vector<float> out(prompt.size() * V);
    EXPECT_TRUE(engine.prefill(prompt.data(), static_cast<int>(prompt.size()), out.data()).ok());
    for (int32_t t : {6, 66, 16}) {  // decode: one-token products
      EXPECT_TRUE(engine.decode(t).ok());
      out.insert(out.end(), engine.logits(), engine.logits() + V);
    }
    return out;
  };
  auto one = std::make_unique<EngineT>();
  ASSERT_TRUE(one->load(file).ok());
  const std::vector<float> want = logits_of(*one);
  for (int threads : {2, 3}) {
    platform::ThreadPool pool(threads);
    auto engine = std::make_unique<EngineT>();
    ASSERT_TRUE(engine->load(file).ok());
    engine->set_workers(pool.workers(), 0);  // split every product, however small
    EXPECT_EQ(logits_of(*engine), want) << threads << " threads";
  }
}

// The split rule's units: a prefill product counts its multiply-adds, a decode product
// (one token) its weights' bytes times kStreamedByteMacs. A product is shared when it
// reaches min_macs_per_worker per worker (here 2 workers that run every part in turn).
TEST(WorkSplit, DecodeProductsWeighTheirBytes) {
  static int shared = 0;
  const auto run_in_turn = [](void*, Workers::Task task, void* ctx, int parts) {
    ++shared;
    if (parts == Workers::kPoolParts) parts = 2;
    for (int part = 0; part < parts; ++part) task(ctx, part, parts);
  };
  constexpr int kRows = 64, kCols = 128, kTokens = 3;
  std::vector<uint8_t> weights(size_t{kRows} * kCols * 4);
  std::vector<float> scales(kRows, 0.f), x(size_t{kTokens} * kCols, 1.f), y(size_t{kTokens} * kRows);
  std::vector<int8_t> act_q(size_t{kTokens} * kCols);
  std::vector<float> act_scale(kTokens * kCols / 32);
  std::vector<int32_t> act_sum(kTokens * kCols / 32);
  const auto shares = [&](DType dtype, int tokens, long min_macs_per_worker) {
    const Matrix m{weights.data(), scales.data(), dtype, kRows, kCols, dtype == DType::q4 ? kQ4Block : kCols};
    ProductInput in{x.data(), tokens, kCols};
    Products p{&in, 1, {&m}, {y.data()}, {}, false, act_q.data(), act_scale.data(), act_sum.data()};
    const WorkSplit split{Workers{nullptr, +run_in_turn, 2}, min_macs_per_worker};
    shared = 0;
    run_products<kernels::Best>(split, p, true);
    return shared == 1;
  };
  const long bytes_i8 = long{kRows} * kCols, bytes_q4 = long{kRows} * (kCols / kQ4Block) * kQ4BlockBytes;
  const long bytes_f32 = 4 * bytes_i8;
  // Decode: 2 workers share from kStreamedByteMacs * bytes / 2 per worker.
  for (const auto& [dtype, bytes] : {std::pair{DType::i8, bytes_i8}, {DType::q4, bytes_q4}, {DType::f32, bytes_f32}}) {
    const long at = kStreamedByteMacs * bytes / 2;
    EXPECT_TRUE(shares(dtype, 1, at)) << static_cast<int>(dtype);
    EXPECT_FALSE(shares(dtype, 1, at + 1)) << static_cast<int>(dtype);
  }
  // Prefill: multiply-adds, whatever the weights' bytes.
  for (DType dtype : {DType::i8, DType::q4, DType::f32}) {
    const long at = long{kRows} * kCols * kTokens / 2;
    EXPECT_TRUE(shares(dtype, kTokens, at)) << static_cast<int>(dtype);
    EXPECT_FALSE(shares(dtype, kTokens, at + 1)) << static_cast<int>(dtype);
  }
}

TEST(EngineWorkers, SplitProductsGiveIdenticalLogitsF32) {
  expect_same_logits_with_workers(test::convert_fixture("mixtral-tiny-a", test::fp32_recipe()));
}

// The families' parts under workers: the shared expert and q/k/v biases (Qwen2-MoE), q/k
// norms (Qwen3, OLMoE), multipliers (Granite), a dense layer (the all-int8 Qwen2 file
// has none; Qwen3 with decoder_sparse_step 2 is checked in test_families).
TEST(EngineWorkers, FamiliesGiveIdenticalLogits) {
  const converter::QuantRecipe int8 = test::recipe(DType::i8, DType::i8, DType::i8, 32);
  for (const auto& recipe : {test::fp32_recipe(), int8}) {
    expect_same_logits_with_workers<config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64")>(
        test::convert_fixture("qwen2moe-tiny-a", recipe));
    expect_same_logits_with_workers<config_from_key("llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkh")>(
        test::convert_fixture("qwen3moe-tiny-a", recipe));
    expect_same_logits_with_workers<config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f48-v256-c128-qkw")>(
        test::convert_fixture("olmoe-tiny-a", recipe));
    expect_same_logits_with_workers<config_from_key("llama-d64-l2-h4-kv2-hd16-e8-k2-f32-v256-c128")>(
        test::convert_fixture("granitemoe-tiny-a", recipe));
  }
}

TEST(EngineWorkers, SplitProductsGiveIdenticalLogitsInt8) {
  for (int group : {0, 32})  // one scale per row; groups of 32 columns
    expect_same_logits_with_workers(
        test::convert_fixture("mixtral-tiny-a", test::recipe(DType::i8, DType::i8, DType::i8, group)));
}

TEST(EngineWorkers, SplitProductsGiveIdenticalLogitsInt4) {
  expect_same_logits_with_workers(
      test::convert_fixture("mixtral-tiny-a", test::recipe(DType::q4, DType::q4, DType::q4)));
  expect_same_logits_with_workers<config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64")>(
      test::convert_fixture("qwen2moe-tiny-a", test::recipe(DType::q4, DType::i8, DType::i8)));
}

}  // namespace
}  // namespace moe
