// The fp32 path against the independent references: Hugging Face transformers'
// MixtralForCausalLM (mixtral-tiny-a), PyTorch makeMoE (makemoe-tiny), and a float64
// forward written from the transformers sources of Qwen3-MoE, OLMoE, Granite-MoE and
// Qwen2-MoE, cross-checked with llama.cpp (../shared/fixtures/archs). Logits of
// every position within 1e-4 x max|ref|, and identical greedy continuations — through
// moe_convert's library and the engine, for both kernel backends, by prefill and by
// token-by-token decode.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "moe/engine.hpp"
#include "moe/generate.hpp"
#include "moe/sampler.hpp"
#include "support/test_support.hpp"

namespace moe {
namespace {

constexpr ModelConfig kMixtral = config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
constexpr ModelConfig kMakemoe = config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");
// head_dim 32 != 64 / 4, q/k norm per head, renormalised top-k
constexpr ModelConfig kQwen3Moe = config_from_key("llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkh");
// q/k norm over the whole projections, full-softmax top-k weights
constexpr ModelConfig kOlmoe = config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f48-v256-c128-qkw");
// the four multipliers, merged experts, tied head
constexpr ModelConfig kGraniteMoe = config_from_key("llama-d64-l2-h4-kv2-hd16-e8-k2-f32-v256-c128");
// q/k/v biases, a gated shared expert of width 64
constexpr ModelConfig kQwen2Moe = config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64");

struct Fixture {
  const char* name;
  bool classic;
};

using test::relative_error;

template <class Backend>
class ReferenceTest : public ::testing::Test {
 protected:
  template <ModelConfig C>
  void check_fixture(const char* fixture) {
    using EngineT = Engine<C, Backend>;
    constexpr int V = C.vocab_size;
    const test::AlignedBuffer buf = test::convert_fixture(fixture, test::fp32_recipe());
    ModelFile file;
    ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
    auto engine = std::make_unique<EngineT>();
    ASSERT_TRUE(engine->load(file).ok());

    const auto cases = test::load_reference(fixture);
    ASSERT_FALSE(cases.empty());
    double worst = 0;
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      const auto& rc = cases[ci];
      SCOPED_TRACE(::testing::Message() << fixture << " case " << ci << " (" << rc.input_ids.size()
                                        << " prompt tokens)");
      const int n = static_cast<int>(rc.input_ids.size());
      // The reference gives logits for the last rows.size() positions (makeMoE sees
      // at most block_size tokens).
      const int first_row = n - static_cast<int>(rc.logits.size());
      ASSERT_GE(first_row, 0);

      // 1. Whole prompt at once (prefill).
      std::vector<float> all(static_cast<size_t>(n) * V);
      engine->reset();
      ASSERT_TRUE(engine->prefill(rc.input_ids.data(), n, all.data()).ok());
      for (size_t r = 0; r < rc.logits.size(); ++r) {
        const double err = relative_error(all.data() + (first_row + r) * V, rc.logits[r]);
        worst = std::max(worst, err);
        EXPECT_LT(err, 1e-4) << "prefill, position " << first_row + r;
      }
      EXPECT_LT(relative_error(engine->logits(), rc.logits.back()), 1e-4) << "logits() after prefill";

      // 2. Greedy continuation, identical to the reference's.
      Sampler<V> greedy(SamplingParams{0.f, 0, 1.f, 0});
      std::vector<int32_t> got;
      const Error stop = generate(*engine, greedy, static_cast<int>(rc.greedy.size()), [&](int32_t id) {
        got.push_back(id);
        return true;
      });
      EXPECT_TRUE(stop.ok()) << stop.what();
      EXPECT_EQ(got, rc.greedy);

      // 3. Token by token (decode path), where the prompt fits the context. Under
      // makeMoE's expert capacity a position's logits depend on the window's length,
      // so only the last position (window = the whole prompt) has a reference row.
      if (n <= C.max_context) {
        const bool capacity = file.constants().capacity_factor > 0.;
        engine->reset();
        for (int i = 0; i < n; ++i) {
          ASSERT_TRUE(engine->decode(rc.input_ids[i]).ok());
          if (i >= first_row && (!capacity || i == n - 1)) {
            EXPECT_LT(relative_error(engine->logits(), rc.logits[i - first_row]), 1e-4) << "decode, position " << i;
          }
        }
      }
    }
    std::printf("  %s, %s kernels: largest logit error %.2e x max|ref|\n", fixture, Backend::name, worst);
  }
};

using Backends = ::testing::Types<kernels::Scalar
#if MOE_SIMD
                                  ,
                                  kernels::Simd
#endif
                                  >;
TYPED_TEST_SUITE(ReferenceTest, Backends);

TYPED_TEST(ReferenceTest, MixtralTinyMatchesTransformers) { this->template check_fixture<kMixtral>("mixtral-tiny-a"); }

TYPED_TEST(ReferenceTest, Qwen3MoeTinyMatchesReference) { this->template check_fixture<kQwen3Moe>("qwen3moe-tiny-a"); }
TYPED_TEST(ReferenceTest, OlmoeTinyMatchesReference) { this->template check_fixture<kOlmoe>("olmoe-tiny-a"); }
TYPED_TEST(ReferenceTest, GraniteMoeTinyMatchesReference) {
  this->template check_fixture<kGraniteMoe>("granitemoe-tiny-a");
}
TYPED_TEST(ReferenceTest, Qwen2MoeTinyMatchesReference) { this->template check_fixture<kQwen2Moe>("qwen2moe-tiny-a"); }

TYPED_TEST(ReferenceTest, MakemoeTinyMatchesPyTorchIncludingWindowSlides) {
  this->template check_fixture<kMakemoe>("makemoe-tiny");
}

// The fixture was made by makeMoE with its default expert capacity (factor 1.0), which
// moe_convert records. Without it the model computes something else: proof that the
// capacity rule is what the match above rests on, not an accident.
TEST(ReferenceCapacity, MakemoeWithoutCapacityDiffersFromReference) {
  converter::ConvertOptions options;
  options.recipe = test::fp32_recipe();
  options.capacity_factor = 0.;
  const test::AlignedBuffer buf(converter::convert_checkpoint(test::fixture_dir("makemoe-tiny"), options).bytes);
  ModelFile file;
  ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
  EXPECT_EQ(file.constants().capacity_factor, 0.);
  auto engine = std::make_unique<Engine<kMakemoe>>();
  ASSERT_TRUE(engine->load(file).ok());
  const auto cases = test::load_reference("makemoe-tiny");
  const auto& rc = cases[0];  // one token: capacity int(1*2/4) = 0, so the reference ran no expert
  ASSERT_EQ(rc.input_ids.size(), 1u);
  ASSERT_TRUE(engine->prefill(rc.input_ids.data(), 1).ok());
  const double err = relative_error(engine->logits(), rc.logits[0]);
  std::printf("  makemoe-tiny without expert capacity: one-token logits off by %.2f x max|ref|\n", err);
  EXPECT_GT(err, 1e-2);
}

// Without capacity the KV cache is exact: decoding token by token gives the same
// logits as one prefill, at every position (and across window slides).
TEST(ReferenceCapacity, KvCacheDecodeEqualsPrefillWithoutCapacity) {
  converter::ConvertOptions options;
  options.recipe = test::fp32_recipe();
  options.capacity_factor = 0.;
  const test::AlignedBuffer buf(converter::convert_checkpoint(test::fixture_dir("makemoe-tiny"), options).bytes);
  ModelFile file;
  ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
  auto a = std::make_unique<Engine<kMakemoe>>();
  auto b = std::make_unique<Engine<kMakemoe>>();
  ASSERT_TRUE(a->load(file).ok());
  ASSERT_TRUE(b->load(file).ok());
  std::vector<int32_t> ids;
  for (int i = 0; i < 16; ++i) ids.push_back((i * 7 + 3) % kMakemoe.vocab_size);
  std::vector<float> all(ids.size() * kMakemoe.vocab_size);
  ASSERT_TRUE(a->prefill(ids.data(), static_cast<int>(ids.size()), all.data()).ok());
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE(b->decode(ids[i]).ok());
    const std::vector<float> row(all.begin() + static_cast<long>(i) * kMakemoe.vocab_size,
                                 all.begin() + static_cast<long>(i + 1) * kMakemoe.vocab_size);
    EXPECT_LT(relative_error(b->logits(), row), 1e-5) << "position " << i;
  }
}

}  // namespace
}  // namespace moe
