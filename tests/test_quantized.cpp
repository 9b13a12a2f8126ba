// Quantized weights are judged against fp32, not by bit equality: logit error and
// top-1 agreement on both fixtures, held-out loss on Shakespeare for makemoe-tiny, and
// greedy continuations mostly unchanged.
//
// Why mean error and not max error for int8: a small perturbation can flip a router's
// top-k choice, and a token then runs a different expert. That is a discontinuity of
// the model, not of the kernels: on mixtral-tiny-a the largest int8 logit error (0.91,
// about 30% of the logit range) is one token whose second expert changed from 3 to 2 in
// layer 1 (traced once by instrumenting the router). Mean error, top-1 agreement and
// held-out loss measure what quantization costs; max error is bounded for fp16 only.
#include <gtest/gtest.h>

#include <cstdio>
#include <iterator>
#include <memory>
#include <random>
#include <type_traits>

#include "moe/engine.hpp"
#include "moe/generate.hpp"
#include "support/test_support.hpp"
#include "tools/eval.hpp"

namespace moe {
namespace {

constexpr ModelConfig kMixtral = config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
constexpr ModelConfig kMakemoe = config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");

template <ModelConfig C>
struct Loaded {
  test::AlignedBuffer buf;
  ModelFile file;
  std::unique_ptr<Engine<C>> engine = std::make_unique<Engine<C>>();

  Loaded(const char* fixture, const converter::QuantRecipe& recipe) : buf(test::convert_fixture(fixture, recipe)) {
    EXPECT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
    EXPECT_TRUE(engine->load(file).ok());
  }
};

// Greedy continuations (24 tokens) of each prompt.
template <ModelConfig C>
std::vector<std::vector<int32_t>> greedy_continuations(Engine<C>& e, const std::vector<std::vector<int32_t>>& prompts) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& prompt : prompts) {
    std::vector<int32_t>& ids = out.emplace_back();
    e.reset();
    EXPECT_TRUE(e.prefill(prompt.data(), static_cast<int>(prompt.size())).ok());
    Sampler<C.vocab_size> greedy(SamplingParams{0.f, 0, 1.f, 0});
    (void)generate(e, greedy, 24, [&](int32_t id) {
      ids.push_back(id);
      return true;
    });
  }
  return out;
}

// The fraction of tokens equal to fp32's before the two texts first diverge (once they
// diverge they need not meet again: count the agreeing prefix).
double greedy_agreement(const std::vector<std::vector<int32_t>>& a, const std::vector<std::vector<int32_t>>& b) {
  long same = 0, total = 0;
  for (size_t p = 0; p < a.size() && p < b.size(); ++p) {
    size_t prefix = 0;
    while (prefix < a[p].size() && prefix < b[p].size() && a[p][prefix] == b[p][prefix]) ++prefix;
    same += static_cast<long>(prefix);
    total += static_cast<long>(b[p].size());
  }
  return total ? static_cast<double>(same) / static_cast<double>(total) : 0;
}

struct Bounds {
  double max_rel_error;  // mean |logit error| / max |fp32 logit| (and max, for fp16)
  double min_top1;
  double min_greedy_prefix;
  double max_loss_increase;  // makemoe: relative held-out loss increase
};

void report(const char* what, const tools::Agreement& a, double greedy, double loss, double loss32) {
  std::printf("  %-32s max|err| %.4f  mean|err| %.5f (%.3f%% of max|logit|)  top-1 %.1f%%  greedy prefix %.1f%%", what,
              a.max_abs_error, a.mean_abs_error, 100 * a.mean_abs_error / a.max_abs_logit, 100 * a.top1, 100 * greedy);
  if (loss32 > 0) std::printf("  held-out loss %.4f (fp32 %.4f, %+.2f%%)", loss, loss32, 100 * (loss / loss32 - 1));
  std::printf("\n");
}

// Windows of the held-out text (makemoe-tiny: 16 tokens each), evenly spaced over it. The
// loss is compared in pairs, the same windows for fp32 and the recipe.
constexpr int kHeldOutWindows = 200;

// fp32's side of every comparison on one fixture: computed once, shared by the recipes
// compared with it (it is half the work of a comparison, and these run under emulators).
template <ModelConfig C>
struct Fp32Reference {
  const char* fixture;
  size_t file_bytes = 0;
  std::vector<std::vector<int32_t>> seqs, prompts, greedy;
  std::vector<std::vector<float>> logits;
  std::vector<int32_t> held_out_ids;  // the classic family's char text
  double loss = 0;

  explicit Fp32Reference(const char* fixture_name) : fixture(fixture_name) {
    Loaded<C> fp32(fixture, test::fp32_recipe());
    file_bytes = fp32.buf.size();
    // Sequences: the reference prompts plus random ones.
    for (const auto& rc : test::load_reference(fixture))
      if (static_cast<int>(rc.input_ids.size()) <= C.max_context) seqs.push_back(rc.input_ids);
    std::mt19937 rng(11);
    for (int s = 0; s < 20; ++s) {
      std::vector<int32_t> seq(static_cast<size_t>(std::min(C.max_context, 32)));
      for (auto& id : seq) id = static_cast<int32_t>(rng() % C.vocab_size);
      seqs.push_back(seq);
    }
    for (const auto& seq : seqs)
      prompts.emplace_back(seq.begin(), seq.begin() + std::min<long>(8, static_cast<long>(seq.size())));
    logits = tools::all_logits(*fp32.engine, seqs);
    EXPECT_FALSE(logits.empty()) << fixture << ": fp32 prefill failed";
    greedy = greedy_continuations(*fp32.engine, prompts);
    if (C.family == Family::classic) {
      held_out_ids = tools::encode_lenient(fp32.file.tokenizer(), test::shakespeare_val_split());
      loss = tools::held_out_loss(*fp32.engine, held_out_ids, kHeldOutWindows);
    }
  }
};

template <ModelConfig C>
void check_recipe(const Fp32Reference<C>& fp32, const char* name, const converter::QuantRecipe& recipe,
                  const Bounds& bounds) {
  SCOPED_TRACE(::testing::Message() << fp32.fixture << " " << name);
  Loaded<C> q(fp32.fixture, recipe);
  const tools::Agreement a = tools::compare_logits(tools::all_logits(*q.engine, fp32.seqs), fp32.logits, C.vocab_size);
  const double greedy = greedy_agreement(greedy_continuations(*q.engine, fp32.prompts), fp32.greedy);
  double loss = 0;
  if (C.family == Family::classic) {
    loss = tools::held_out_loss(*q.engine, fp32.held_out_ids, kHeldOutWindows);
    EXPECT_LT(loss / fp32.loss - 1, bounds.max_loss_increase) << "held-out loss " << loss << " vs fp32 " << fp32.loss;
  }
  report(name, a, greedy, loss, fp32.loss);
  EXPECT_LT(a.mean_abs_error / a.max_abs_logit, bounds.max_rel_error);
  if (recipe.experts == DType::f16) {
    EXPECT_LT(a.max_abs_error / a.max_abs_logit, bounds.max_rel_error);
  }
  EXPECT_GE(a.top1, bounds.min_top1);
  EXPECT_GE(greedy, bounds.min_greedy_prefix);
  EXPECT_LT(q.buf.size(), fp32.file_bytes);
}

// Each recipe with its bounds on both fixtures, set from measurement with a margin (the
// measured values print when the test runs). Greedy agreement is looser on
// mixtral-tiny-a: its random weights give nearly flat logits, so argmax ties flip easily.
struct RecipeCase {
  const char* name;
  converter::QuantRecipe recipe;
  Bounds mixtral, makemoe;
};

const RecipeCase kCases[] = {
    {"experts f16", test::recipe(DType::f16), {0.002, 0.995, 0.95, 0}, {0.002, 0.995, 0.95, 0.0005}},
    {"experts i8/g32",
     test::recipe(DType::i8, DType::f32, DType::f32, 32),
     {0.005, 0.96, 0.75, 0},
     {0.005, 0.97, 0.8, 0.002}},
    {"experts i8/row",
     test::recipe(DType::i8, DType::f32, DType::f32, 0),
     {0.005, 0.95, 0.7, 0},
     {0.005, 0.97, 0.85, 0.002}},
    {"i8/row experts, f16 attn+emb",
     test::recipe(DType::i8, DType::f16, DType::f16, 0),
     {0.005, 0.95, 0.7, 0},
     {0.005, 0.97, 0.85, 0.002}},
    {"default (int4 experts, i8/row attn+emb)",
     converter::QuantRecipe{},
     {0.035, 0.74, 0.12, 0},
     {0.02, 0.88, 0.4, 0.003}},
    {"all i8/g32", test::recipe(DType::i8, DType::i8, DType::i8, 32), {0.01, 0.93, 0.55, 0}, {0.01, 0.95, 0.75, 0.005}},
    {"experts int4",
     test::recipe(DType::q4, DType::f32, DType::f32, 0),
     {0.03, 0.76, 0.15, 0},
     {0.012, 0.9, 0.5, 0.002}},
    {"int4 experts, f16 attn+emb",
     test::recipe(DType::q4, DType::f16, DType::f16, 0),
     {0.03, 0.76, 0.15, 0},
     {0.014, 0.9, 0.5, 0.002}},
};

// Recipes [first, last) of kCases on one fixture, against one fp32 side. Two tests per
// fixture, not one per recipe: the fp32 side is computed once per half, and the halves
// run side by side under CTest (one test of all eight was the emulated suites' longest).
template <ModelConfig C>
void check_recipes(const char* fixture, Bounds RecipeCase::*bounds, int first, int last) {
  const Fp32Reference<C> fp32(fixture);
  for (int i = first; i < last; ++i) check_recipe<C>(fp32, kCases[i].name, kCases[i].recipe, kCases[i].*bounds);
}
constexpr int kCaseCount = static_cast<int>(std::size(kCases));
constexpr int kInt4Cases = 4;  // kCases from here on: the int4 recipes and all-int8
static_assert(kCaseCount == 8, "the two halves below split kCases at kInt4Cases");

TEST(QuantizedRecipes, MixtralTinyF16AndInt8ExpertsCloseToFp32) {
  check_recipes<kMixtral>("mixtral-tiny-a", &RecipeCase::mixtral, 0, kInt4Cases);
}
TEST(QuantizedRecipes, MixtralTinyInt4AndAllInt8CloseToFp32) {
  check_recipes<kMixtral>("mixtral-tiny-a", &RecipeCase::mixtral, kInt4Cases, kCaseCount);
}
TEST(QuantizedRecipes, MakemoeTinyF16AndInt8ExpertsCloseToFp32) {
  check_recipes<kMakemoe>("makemoe-tiny", &RecipeCase::makemoe, 0, kInt4Cases);
}
TEST(QuantizedRecipes, MakemoeTinyInt4AndAllInt8CloseToFp32) {
  check_recipes<kMakemoe>("makemoe-tiny", &RecipeCase::makemoe, kInt4Cases, kCaseCount);
}

// The Hugging Face families through int8 experts with fp16 attention and embeddings (the
// default before int4), all-int8 and int4 experts: the same measures against their own fp32, bounds set from
// measurement with a margin. Their fixtures' weights are N(0, 0.15), far from trained
// weights, so the bounds are about the arithmetic, not about language quality.
struct FamilyCase {
  const char* fixture;
  Bounds int8_f16, all_int8, int4_experts;
};
template <ModelConfig C>
void check_family(const FamilyCase& f) {
  const Fp32Reference<C> fp32(f.fixture);
  check_recipe<C>(fp32, "i8/row experts, f16 attn+emb", test::recipe(DType::i8, DType::f16, DType::f16, 0), f.int8_f16);
  check_recipe<C>(fp32, "all i8/g32", test::recipe(DType::i8, DType::i8, DType::i8, 32), f.all_int8);
  // OLMoE's fixture has 48-column down projections: int4 (blocks of 32) is refused there
  // (test_converter); the others run it.
  if (f.int4_experts.min_top1 > 0)
    check_recipe<C>(fp32, "experts int4", test::recipe(DType::q4, DType::f32, DType::f32, 0), f.int4_experts);
}

// One test per family (each its own process under CTest, two at a time).
TEST(QuantizedFamilies, Qwen3MoeCloseToFp32) {
  check_family<config_from_key("llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkh")>(
      {"qwen3moe-tiny-a", {0.005, 0.94, 0.6, 0}, {0.012, 0.9, 0.35, 0}, {0.025, 0.78, 0.15, 0}});
}
TEST(QuantizedFamilies, OlmoeCloseToFp32) {
  check_family<config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f48-v256-c128-qkw")>(
      {"olmoe-tiny-a", {0.005, 0.94, 0.6, 0}, {0.012, 0.9, 0.3, 0}, {}});
}
TEST(QuantizedFamilies, GraniteMoeCloseToFp32) {
  check_family<config_from_key("llama-d64-l2-h4-kv2-hd16-e8-k2-f32-v256-c128")>(
      {"granitemoe-tiny-a", {0.006, 0.94, 0.6, 0}, {0.015, 0.85, 0.3, 0}, {0.03, 0.7, 0.08, 0}});
}
TEST(QuantizedFamilies, Qwen2MoeCloseToFp32) {
  check_family<config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64")>(
      {"qwen2moe-tiny-a", {0.006, 0.94, 0.45, 0}, {0.012, 0.88, 0.25, 0}, {0.04, 0.68, 0.08, 0}});
}

// The f16 KV cache against the f32 one, with fp32 weights, on every fixture of the llama
// family: keys and values rounded to 11 significant bits move logits by a few 1e-4 of
// their range, never a top-1 choice of the reference prompts' positions here.
template <ModelConfig C>
void check_kv_f16(const char* fixture, double max_rel_error, double min_top1) {
  SCOPED_TRACE(fixture);
  const test::AlignedBuffer buf = test::convert_fixture(fixture, test::fp32_recipe());
  ModelFile file;
  ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
  auto f32 = std::make_unique<Engine<C>>();
  auto f16 = std::make_unique<Engine<C, kernels::Best, default_prefill_chunk(C), KvCache::f16>>();
  ASSERT_TRUE(f32->load(file).ok());
  ASSERT_TRUE(f16->load(file).ok());
  std::vector<std::vector<int32_t>> seqs;
  for (const auto& rc : test::load_reference(fixture)) seqs.push_back(rc.input_ids);
  const tools::Agreement a = tools::compare_logits(*f16, *f32, seqs);
  std::printf("  %-20s f16 KV cache: max|err| %.2e of max|logit|, mean %.2e, top-1 %.1f%%, cache %zu -> %zu bytes\n",
              fixture, a.max_abs_error / a.max_abs_logit, a.mean_abs_error / a.max_abs_logit, 100 * a.top1,
              sizeof(float) * 2 * C.n_layers * C.kv_dim() * C.max_context,
              sizeof(uint16_t) * 2 * C.n_layers * C.kv_dim() * C.max_context);
  EXPECT_LT(a.max_abs_error / a.max_abs_logit, max_rel_error);
  EXPECT_GE(a.top1, min_top1);
  EXPECT_LT(sizeof(*f16), sizeof(*f32));
}

TEST(KvCacheF16, CloseToF32OnEveryLlamaFixture) {
  check_kv_f16<kMixtral>("mixtral-tiny-a", 0.01, 0.95);
  check_kv_f16<config_from_key("llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkh")>("qwen3moe-tiny-a", 0.01, 0.95);
  check_kv_f16<config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f48-v256-c128-qkw")>("olmoe-tiny-a", 0.01, 0.95);
  check_kv_f16<config_from_key("llama-d64-l2-h4-kv2-hd16-e8-k2-f32-v256-c128")>("granitemoe-tiny-a", 0.01, 0.95);
  check_kv_f16<config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64")>("qwen2moe-tiny-a", 0.01, 0.95);
}

// With int8 activations off, an int8 model computes what a target without integer dot
// products computes (int8 weights widened against f32 activations): the scalar engine's
// logits up to float rounding. With them on (where the target has integer dot
// products), the activations' rounding shows.
TEST(Int8Activations, OffReproducesTheWideningNumerics) {
  const test::AlignedBuffer buf =
      test::convert_fixture("mixtral-tiny-a", test::recipe(DType::i8, DType::i8, DType::i8, 0));
  ModelFile file;
  ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
  auto scalar = std::make_unique<Engine<kMixtral, kernels::Scalar>>();
  auto best = std::make_unique<Engine<kMixtral>>();
  ASSERT_TRUE(scalar->load(file).ok());
  ASSERT_TRUE(best->load(file).ok());
  const std::vector<int32_t> prompt = {1, 5, 9, 12, 40, 3, 77, 20, 21, 60, 2, 8, 13, 50, 33, 7, 90, 11, 4};
  const int n = static_cast<int>(prompt.size()), V = kMixtral.vocab_size;
  std::vector<float> want(prompt.size() * V), got(want.size());
  ASSERT_TRUE(scalar->prefill(prompt.data(), n, want.data()).ok());
  auto max_error = [&](bool int8_activations) {
    best->set_int8_activations(int8_activations);
    best->reset();
    EXPECT_TRUE(best->prefill(prompt.data(), n, got.data()).ok());
    double worst = 0, scale = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
    }
    return worst / scale;
  };
  EXPECT_LT(max_error(false), 1e-5);
  if (kernels::kInt8Dot && !std::is_same_v<kernels::Best, kernels::Scalar>) {
    EXPECT_GT(max_error(true), 1e-4);
  }
}

}  // namespace
}  // namespace moe
