// moe_merge: the merge arithmetic on hand-built tensors (expected values worked out here,
// independently of the code under test), recipes, and whole merges of random
// checkpoints checked tensor by tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "converter/checkpoint.hpp"
#include "converter/checkpoint_writer.hpp"
#include "converter/input_error.hpp"
#include "converter/converter.hpp"
#include "support/test_support.hpp"
#include "trainer/checkpoint_io.hpp"
#include "trainer/merge/merge.hpp"
#include "trainer/merge/merge_math.hpp"

namespace {

using namespace moe;
using namespace moe::merge;
using nlohmann::json;

// ---------------------------------------------------------------- arithmetic

TEST(MergeMath, LinearIsTheWeightedMean) {
  const std::vector<float> a = {1, 2, 3}, b = {4, 5, 6}, c = {-2, 0, 10};
  std::vector<float> out(3);
  linear({a.data(), b.data(), c.data()}, {1, 2, 5}, true, 3, out.data());
  EXPECT_FLOAT_EQ(out[0], (1 * 1 + 2 * 4 + 5 * -2) / 8.f);
  EXPECT_FLOAT_EQ(out[1], (1 * 2 + 2 * 5 + 5 * 0) / 8.f);
  EXPECT_FLOAT_EQ(out[2], (1 * 3 + 2 * 6 + 5 * 10) / 8.f);
  linear({a.data(), b.data(), c.data()}, {1, 2, 5}, false, 3, out.data());
  EXPECT_FLOAT_EQ(out[2], 1 * 3 + 2 * 6 + 5 * 10);
}

TEST(MergeMath, SlerpOfOrthogonalVectorsFollowsTheArc) {
  const std::vector<float> a = {2, 0, 0}, b = {0, 2, 0};
  std::vector<float> out(3);
  EXPECT_FALSE(slerp(a.data(), b.data(), 3, 0.5, out.data()));
  // Halfway along a quarter circle of radius 2: 2 (cos 45°, sin 45°).
  EXPECT_NEAR(out[0], std::sqrt(2.0), 1e-6);
  EXPECT_NEAR(out[1], std::sqrt(2.0), 1e-6);
  EXPECT_NEAR(out[2], 0, 1e-7);
  // A third of the way: 2 (cos 30°, sin 30°) = (sqrt 3, 1) -- a linear mix would give (4/3, 2/3).
  slerp(a.data(), b.data(), 3, 1.0 / 3, out.data());
  EXPECT_NEAR(out[0], std::sqrt(3.0), 1e-6);
  EXPECT_NEAR(out[1], 1.0, 1e-6);
  slerp(a.data(), b.data(), 3, 0.0, out.data());
  EXPECT_EQ(out, a);
}

TEST(MergeMath, SlerpOfParallelTensorsIsLinear) {
  const std::vector<float> a = {1, 2, 3}, b = {2, 4, 6};
  std::vector<float> out(3);
  EXPECT_TRUE(slerp(a.data(), b.data(), 3, 0.25, out.data()));
  for (int i = 0; i < 3; ++i)
    EXPECT_FLOAT_EQ(out[static_cast<size_t>(i)], 0.75f * a[static_cast<size_t>(i)] + 0.25f * b[static_cast<size_t>(i)]);
}

TEST(MergeMath, TrimKeepsTheLargestMagnitudes) {
  std::vector<float> d = {0.1f, -3, 2, -0.5f, 1};
  trim_by_magnitude(d.data(), 5, 0.4);  // 2 of 5 survive
  EXPECT_EQ(d, (std::vector<float>{0, -3, 2, 0, 0}));
  std::vector<float> all = {1, -1, 2};
  trim_by_magnitude(all.data(), 3, 1.0);
  EXPECT_EQ(all, (std::vector<float>{1, -1, 2}));
}

// Three models' deltas from a base of ones, worked by hand:
//   entry 0: deltas  1, -1,  2  sum  2 -> +  agreeing 1, 2   -> mean 1.5
//   entry 1: deltas -2, -1,  4  sum  1 -> +  agreeing 4      -> 4
//   entry 2: deltas  3,  1, -5  sum -1 -> -  agreeing -5     -> -5
//   entry 3: deltas .5, .5, -1  sum  0 -> +  agreeing .5, .5 -> 0.5
TEST(MergeMath, TiesElectsTheSignAndAveragesOnlyTheAgreeingDeltas) {
  const std::vector<float> base = {1, 1, 1, 1};
  const std::vector<float> m1 = {2, -1, 4, 1.5f}, m2 = {0, 0, 2, 1.5f}, m3 = {3, 5, -4, 0};
  std::vector<float> out(4);
  TaskVectorOptions o;
  o.consensus = Consensus::sign;
  o.normalize = true;
  merge_task_vectors(base.data(), {m1.data(), m2.data(), m3.data()}, {1, 1, 1}, {1, 1, 1}, 4, o, out.data());
  EXPECT_EQ(out, (std::vector<float>{1 + 1.5f, 1 + 4, 1 - 5, 1 + 0.5f}));

  // Trimmed to density 0.5 (2 of 4 entries per model, by magnitude; equal magnitudes keep the lower index):
  //   m1 deltas (1, -2, 3, .5) -> (0, -2, 3, 0); m2 (-1, -1, 1, .5) -> (-1, -1, 0, 0); m3 (2, 4, -5, -1) -> (0, 4, -5,
  //   0) entry 0: sum -1 -> -, only m2 -> -1; entry 1: sum 1 -> +, only m3 -> 4; entry 2: sum -2 -> -, -5; entry 3:
  //   every delta trimmed -> 0.
  o.sparsify = Sparsify::magnitude;
  merge_task_vectors(base.data(), {m1.data(), m2.data(), m3.data()}, {1, 1, 1}, {0.5, 0.5, 0.5}, 4, o, out.data());
  EXPECT_EQ(out, (std::vector<float>{1 - 1, 1 + 4, 1 - 5, 1 + 0}));

  // Weights (1, 1, 2), untrimmed: entry 0's weighted sum 1 - 1 + 4 = 4 -> +; agreeing m1 (w 1, d 1), m3 (w 2, d 2)
  // -> (1*1 + 2*2) / (1 + 2); lambda 0.5 halves the merged delta.
  o.sparsify = Sparsify::none;
  o.lambda = 0.5;
  merge_task_vectors(base.data(), {m1.data(), m2.data(), m3.data()}, {1, 1, 2}, {1, 1, 1}, 4, o, out.data());
  EXPECT_FLOAT_EQ(out[0], 1 + 0.5f * 5.f / 3.f);
}

TEST(MergeMath, TaskArithmeticAddsTheWeightedDeltas) {
  const std::vector<float> base = {1, 2}, m1 = {2, 2}, m2 = {1, 5};
  std::vector<float> out(2);
  merge_task_vectors(base.data(), {m1.data(), m2.data()}, {0.5, 2}, {1, 1}, 2, TaskVectorOptions{}, out.data());
  EXPECT_FLOAT_EQ(out[0], 1 + 0.5f * 1 + 2 * 0);
  EXPECT_FLOAT_EQ(out[1], 2 + 0.5f * 0 + 2 * 3);
}

TEST(MergeMath, DareKeepsTheExpectedValueAndDropsTheRightShare) {
  const int n = 8, seeds = 4000;
  const double density = 0.3;
  const std::vector<float> delta = {1, -2, 0.5f, 4, -1, 3, 0.25f, -0.75f};
  std::vector<double> mean(n, 0.0);
  long kept = 0;
  for (int s = 0; s < seeds; ++s) {
    std::vector<float> d = delta;
    drop_and_rescale(d.data(), n, density, static_cast<uint64_t>(s), 7);
    for (int i = 0; i < n; ++i) {
      mean[static_cast<size_t>(i)] += d[static_cast<size_t>(i)] / static_cast<double>(seeds);
      if (d[static_cast<size_t>(i)] != 0) {
        ++kept;
        EXPECT_FLOAT_EQ(d[static_cast<size_t>(i)],
                        static_cast<float>(delta[static_cast<size_t>(i)] / density));  // rescaled survivor
      }
    }
  }
  for (int i = 0; i < n; ++i) {
    // Each draw is x/p with probability p, else 0: standard deviation |x| sqrt((1-p)/p); 4 sigma of the mean.
    const double x = delta[static_cast<size_t>(i)],
                 sigma = std::fabs(x) * std::sqrt((1 - density) / density) / std::sqrt(seeds);
    EXPECT_NEAR(mean[static_cast<size_t>(i)], x, 4 * sigma) << "entry " << i;
  }
  const double share = static_cast<double>(kept) / (static_cast<double>(n) * seeds);
  EXPECT_NEAR(share, density, 4 * std::sqrt(density * (1 - density) / (n * seeds)));
  // Deterministic in the seed.
  std::vector<float> x = delta, y = delta, z = delta;
  drop_and_rescale(x.data(), n, 0.5, 42, 1);
  drop_and_rescale(y.data(), n, 0.5, 42, 1);
  drop_and_rescale(z.data(), n, 0.5, 43, 1);
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
}

// ---------------------------------------------------------------- settings and recipes

TensorSpec layer_tensor(TensorRole role, int layer, int expert = -1) {
  return TensorSpec{role, layer, expert, 4, 4, TensorClass::attention};
}

TEST(MergeRecipe, SettingsFollowFiltersAndInterpolateOverDepth) {
  const Setting s = Setting::parse(json::parse(R"([{"filter": "self_attn", "value": [0, 1]},
                                                   {"filter": "mlp", "value": [0, 0.5, 1]}, {"value": 0.25}])"),
                                   "t");
  EXPECT_DOUBLE_EQ(*s.at(layer_tensor(TensorRole::wq, 0), 5), 0.0);
  EXPECT_DOUBLE_EQ(*s.at(layer_tensor(TensorRole::wk, 2), 5), 0.5);  // layer 2 of 5 is halfway
  EXPECT_DOUBLE_EQ(*s.at(layer_tensor(TensorRole::wo, 4), 5), 1.0);
  EXPECT_DOUBLE_EQ(*s.at(layer_tensor(TensorRole::expert_w1, 1, 3), 5),
                   0.25);  // a quarter of the way: first segment, halfway
  EXPECT_DOUBLE_EQ(*s.at(layer_tensor(TensorRole::router, 3), 5), 0.75);
  EXPECT_DOUBLE_EQ(*s.at(layer_tensor(TensorRole::attn_norm, 3), 5), 0.25);  // no filter matches: the catch-all
  const Setting only_attention = Setting::parse(json::parse(R"([{"filter": "wq", "value": 1}])"), "t");
  EXPECT_FALSE(only_attention.at(layer_tensor(TensorRole::wk, 0), 2).has_value());
  const Setting ranges = Setting::parse(
      json::parse(R"([{"layers": [0, 2], "value": 0.1}, {"filter": "mlp", "layers": [2, 4], "value": 0.2},
                                                        {"value": 0.9}])"),
      "t");
  EXPECT_DOUBLE_EQ(*ranges.at(layer_tensor(TensorRole::wq, 1), 4), 0.1);
  EXPECT_DOUBLE_EQ(*ranges.at(layer_tensor(TensorRole::wq, 2), 4), 0.9);  // layer 2 is outside [0, 2); not mlp
  EXPECT_DOUBLE_EQ(*ranges.at(layer_tensor(TensorRole::expert_w2, 3, 0), 4), 0.2);
  EXPECT_DOUBLE_EQ(*ranges.at(TensorSpec{TensorRole::lm_head, -1, -1, 4, 4, TensorClass::embedding}, 4),
                   0.9);  // global: no layer
  EXPECT_THROW(Setting::parse(json::parse(R"([{"layers": [3, 1], "value": 1}])"), "t"), InputError);
  const Setting depth = Setting::parse(json::parse("[0, 1]"), "weight");
  EXPECT_DOUBLE_EQ(*depth.at(TensorSpec{TensorRole::token_embedding, -1, -1, 4, 4, TensorClass::embedding}, 4), 0.0);
  EXPECT_DOUBLE_EQ(*depth.at(TensorSpec{TensorRole::lm_head, -1, -1, 4, 4, TensorClass::embedding}, 4), 1.0);
}

TEST(MergeRecipe, YamlAndJsonGiveTheSameRecipe) {
  const std::string yaml = R"(
merge_method: ties
base_model: runs/base
models:
  - model: runs/a
    parameters:
      weight: 0.7
      density: [0.2, 0.8]
  - model: "runs/b"
parameters: {normalize: false, lambda: 1.5, density: 0.5}
dtype: bfloat16
)";
  const json from_yaml = yaml_to_json(yaml, "test");
  const json from_json = json::parse(R"({"merge_method": "ties", "base_model": "runs/base",
      "models": [{"model": "runs/a", "parameters": {"weight": 0.7, "density": [0.2, 0.8]}}, {"model": "runs/b"}],
      "parameters": {"normalize": false, "lambda": 1.5, "density": 0.5}, "dtype": "bfloat16"})");
  EXPECT_EQ(from_yaml, from_json);
  const MergeRecipe r = parse_recipe(from_yaml);
  EXPECT_EQ(r.method, MergeMethod::ties);
  EXPECT_EQ(r.models.size(), 2u);
  EXPECT_EQ(r.normalize, false);
  EXPECT_DOUBLE_EQ(r.lambda, 1.5);
  EXPECT_DOUBLE_EQ(*r.models[0].density.at(layer_tensor(TensorRole::wq, 1), 2), 0.8);
  EXPECT_FALSE(r.models[1].weight.given());
}

TEST(MergeRecipe, YamlScalarsFollowTheCoreSchema) {
  const json j = yaml_to_json("a: 1e3\nb: .5\nc: -2\nd: 1.2.3\ne: 5x\nf: '7'\ng: true\nh: ~\ni: +0.25e-1\n", "test");
  EXPECT_EQ(j["a"], 1000.0);
  EXPECT_EQ(j["b"], 0.5);
  EXPECT_EQ(j["c"], -2);
  EXPECT_EQ(j["d"], "1.2.3");
  EXPECT_EQ(j["e"], "5x");
  EXPECT_EQ(j["f"], "7");  // quoted: a string
  EXPECT_EQ(j["g"], true);
  EXPECT_TRUE(j["h"].is_null());
  EXPECT_EQ(j["i"], 0.025);
}

TEST(MergeRecipe, MistakesAreNamed) {
  const auto message = [](const std::string& yaml) {
    try {
      parse_recipe(yaml_to_json(yaml, "test"));
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message("merge_method: average\nmodels: [a]").find("unknown merge_method 'average'"), std::string::npos);
  EXPECT_NE(message("merge_method: linear\nmodels: [a]\nparamters: {}").find("unknown key 'paramters'"),
            std::string::npos);
  EXPECT_NE(message("merge_method: slerp\nbase_model: a\nmodels: [b]").find("parameters.t"), std::string::npos);
  EXPECT_NE(message("merge_method: ties\nmodels: [a, b]").find("base_model"), std::string::npos);
  EXPECT_NE(message("merge_method: linear\nmodels: [a]\nparameters: {weight: '0.5'}").find("must be a number"),
            std::string::npos);
  EXPECT_NE(message("merge_method: passthrough\nslices: [{sources: [{model: a, layer_range: [4, 2]}]}]").find("empty"),
            std::string::npos);
  EXPECT_NE(message("base_model: a\nexperts: [{source_model: b}, {source_model: c}]").find("positive_prompts"),
            std::string::npos);
  EXPECT_NE(message("merge_method: [").find("not valid YAML"), std::string::npos);
}

// ---------------------------------------------------------------- whole merges

constexpr ModelConfig kClassic = config_from_key("classic-d16-l3-h2-kv2-hd8-e2-k1-f32-v12-c8");
const std::vector<uint32_t> kChars = {'\n', ' ', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'};

std::filesystem::path random_model(const test::TempDir& tmp, const std::string& name, uint64_t seed,
                                   ModelConfig c = kClassic, std::vector<uint32_t> chars = kChars) {
  const std::filesystem::path dir = tmp / name;
  converter::write_random_checkpoint(dir, c, seed, chars);
  return dir;
}

std::vector<float> load(const std::filesystem::path& dir, const TensorSpec& spec) {
  return converter::open_checkpoint(dir).load(spec);
}

std::string merge_error(const MergeRecipe& r, const std::filesystem::path& out) {
  try {
    run_merge(r, out);
  } catch (const InputError& e) {
    return e.what();
  }
  return "accepted";
}

// A merged checkpoint is written in moe_train's layout (Mixtral or makeMoE); a Qwen3-MoE
// checkpoint's q/k norms would have no place there: refused, naming its model_type.
TEST(Merge, OtherFamiliesAreRefusedByModelType) {
  test::TempDir tmp;
  const std::string q = test::fixture_dir("qwen3moe-tiny-a").string();
  const std::string err = merge_error(
      parse_recipe({{"merge_method", "linear"}, {"models", {q, q}}, {"parameters", {{"weight", 1}}}}), tmp / "m");
  EXPECT_NE(err.find("is a qwen3_moe checkpoint; moe_merge merges mixtral and makemoe checkpoints"), std::string::npos)
      << err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "m"));
}

TEST(Merge, LinearSlerpAndTaskVectorsMatchTheArithmeticOnEveryTensor) {
  test::TempDir tmp;
  const auto a = random_model(tmp, "a", 1), b = random_model(tmp, "b", 2), base = random_model(tmp, "base", 3);
  run_merge(parse_recipe(
                {{"merge_method", "linear"},
                 {"models",
                  {{{"model", a}, {"parameters", {{"weight", 1}}}}, {{"model", b}, {"parameters", {{"weight", 3}}}}}}}),
            tmp / "linear");
  run_merge(parse_recipe({{"merge_method", "slerp"}, {"base_model", a}, {"models", {b}}, {"parameters", {{"t", 0}}}}),
            tmp / "slerp0");
  run_merge(
      parse_recipe({{"merge_method", "slerp"}, {"base_model", a}, {"models", {a, b}}, {"parameters", {{"t", 1}}}}),
      tmp / "slerp1");
  run_merge(parse_recipe({{"merge_method", "task_arithmetic"},
                          {"base_model", base},
                          {"models", {a, b}},
                          {"parameters", {{"weight", 0.5}}}}),
            tmp / "ta");
  const converter::Checkpoint out = converter::open_checkpoint(tmp / "linear");
  EXPECT_EQ(out.config, kClassic);
  EXPECT_EQ(out.chars, kChars);
  int tensors = 0;
  for_each_tensor_spec(kClassic, [&](const TensorSpec& spec) {
    const std::vector<float> x = load(a, spec), y = load(b, spec), z = load(base, spec);
    const std::vector<float> lin = out.load(spec), s0 = load(tmp / "slerp0", spec), s1 = load(tmp / "slerp1", spec),
                             ta = load(tmp / "ta", spec);
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_NEAR(lin[i], (x[i] + 3 * y[i]) / 4, 1e-6) << spec.layer;
      ASSERT_EQ(s0[i], x[i]);
      ASSERT_NEAR(s1[i], y[i], 1e-6f * (1 + std::fabs(y[i])));
      ASSERT_NEAR(ta[i], z[i] + 0.5f * (x[i] - z[i]) + 0.5f * (y[i] - z[i]), 1e-6);
    }
    ++tensors;
  });
  EXPECT_EQ(tensors, tensor_count(kClassic));
  // The output is a checkpoint like any other.
  converter::ConvertOptions o;
  EXPECT_FALSE(converter::convert_checkpoint(tmp / "linear", o).bytes.empty());
}

TEST(Merge, DareIsSeededAndTiesDropsDisagreeingDeltas) {
  test::TempDir tmp;
  const auto base = random_model(tmp, "base", 1), a = random_model(tmp, "a", 2), b = random_model(tmp, "b", 3);
  const auto recipe = [&](const char* method, uint64_t seed) {
    return parse_recipe({{"merge_method", method},
                         {"base_model", base},
                         {"models", {a, b}},
                         {"parameters", {{"density", 0.5}, {"seed", seed}}}});
  };
  run_merge(recipe("dare_ties", 5), tmp / "d5");
  run_merge(recipe("dare_ties", 5), tmp / "d5again");
  run_merge(recipe("dare_ties", 6), tmp / "d6");
  EXPECT_EQ(test::read_file(tmp / "d5" / "model.safetensors"), test::read_file(tmp / "d5again" / "model.safetensors"));
  EXPECT_NE(test::read_file(tmp / "d5" / "model.safetensors"), test::read_file(tmp / "d6" / "model.safetensors"));
  run_merge(recipe("ties", 0), tmp / "ties");
  const TensorSpec wq{TensorRole::wq, 1, -1, kClassic.q_dim(), kClassic.d_model, TensorClass::attention};
  const std::vector<float> z = load(base, wq), x = load(a, wq), y = load(b, wq), t = load(tmp / "ties", wq);
  // Every merged delta is one of the sources' deltas or their mean, and agrees in sign with their sum.
  for (size_t i = 0; i < z.size(); ++i) {
    const float dx = x[i] - z[i], dy = y[i] - z[i], dt = t[i] - z[i];
    const bool is_x = std::fabs(dt - dx) < 1e-6f, is_y = std::fabs(dt - dy) < 1e-6f,
               is_mean = std::fabs(dt - (dx + dy) / 2) < 1e-6f;
    ASSERT_TRUE(dt == 0 || is_x || is_y || is_mean) << i;
    ASSERT_TRUE(dt == 0 || (dt > 0) == (dx + dy >= 0) || !is_mean) << i;
  }
}

TEST(Merge, PassthroughStacksTheSlicesLayers) {
  test::TempDir tmp;
  const auto a = random_model(tmp, "a", 1), b = random_model(tmp, "b", 2);
  const MergeResult r = run_merge(parse_recipe(json::parse(R"({"merge_method": "passthrough", "slices": [
        {"sources": [{"model": ")" + a.string() + R"(", "layer_range": [0, 2]}]},
        {"sources": [{"model": ")" + b.string() + R"(", "layer_range": [1, 3]}]}]})")),
                                  tmp / "deep");
  EXPECT_EQ(r.config.n_layers, 4);
  const converter::Checkpoint out = converter::open_checkpoint(tmp / "deep");
  EXPECT_EQ(out.config.n_layers, 4);
  const auto spec = [](TensorRole role, int layer) {
    return TensorSpec{role, layer, -1, kClassic.q_dim(), kClassic.d_model, TensorClass::attention};
  };
  EXPECT_EQ(out.load(spec(TensorRole::wq, 1)), load(a, spec(TensorRole::wq, 1)));
  EXPECT_EQ(out.load(spec(TensorRole::wq, 2)), load(b, spec(TensorRole::wq, 1)));
  EXPECT_EQ(out.load(spec(TensorRole::wq, 3)), load(b, spec(TensorRole::wq, 2)));
  const TensorSpec emb{TensorRole::token_embedding, -1, -1, kClassic.vocab_size, kClassic.d_model,
                       TensorClass::embedding};
  EXPECT_EQ(out.load(emb), load(a, emb));
  EXPECT_NE(merge_error(parse_recipe({{"merge_method", "passthrough"},
                                      {"slices", {{{"sources", {{{"model", a}, {"layer_range", {2, 4}}}}}}}}}),
                        tmp / "bad")
                .find("goes past the 3 layers"),
            std::string::npos);
}

TEST(Merge, FrankenMoeTakesDonorFfnsAndRoutesByMeanHiddenState) {
  test::TempDir tmp;
  constexpr ModelConfig dense = config_from_key("classic-d16-l3-h2-kv2-hd8-e1-k1-f32-v12-c8");
  const auto base = random_model(tmp, "base", 1, dense), d1 = random_model(tmp, "d1", 2, dense);
  const auto moe_donor = random_model(tmp, "d2", 3, kClassic);  // an MoE donor: its expert 1 is taken
  const std::string p1 = "abcabcab\nabc", p2 = "jihgf jihg";
  const MergeRecipe r = parse_recipe({{"merge_method", "moe"},
                                      {"base_model", base},
                                      {"experts_per_token", 1},
                                      {"experts",
                                       {{{"source_model", d1}, {"positive_prompts", {p1}}},
                                        {{"source_model", moe_donor}, {"expert", 1}, {"positive_prompts", {p2}}}}}});
  const MergeResult result = run_merge(r, tmp / "moe");
  ModelConfig want = dense;
  want.n_experts = 2;
  want.top_k = 1;
  EXPECT_EQ(result.config, want);
  const converter::Checkpoint out = converter::open_checkpoint(tmp / "moe");
  EXPECT_EQ(out.config, want);
  EXPECT_EQ(out.constants.capacity_factor, 0.);
  for (int l = 0; l < 3; ++l) {
    const TensorSpec w1{TensorRole::expert_w1, l, 0, dense.expert_hidden, dense.d_model, TensorClass::expert};
    TensorSpec w2_out{TensorRole::expert_w2, l, 1, dense.d_model, dense.expert_hidden, TensorClass::expert},
        w2_in = w2_out;
    w2_in.expert = 1;
    EXPECT_EQ(out.load(w1), load(d1, w1));
    EXPECT_EQ(out.load(w2_out), load(moe_donor, w2_in));
    const TensorSpec wq{TensorRole::wq, l, -1, dense.q_dim(), dense.d_model, TensorClass::attention};
    EXPECT_EQ(out.load(wq), load(base, wq));
  }
  // Layer 0's input is the embeddings: its router row for an expert is the normalised mean
  // of token + position embeddings over that expert's prompt (one window: 8 tokens, then
  // the last 8 -- windows of the context length covering the prompt).
  const std::vector<float> tok =
      load(base, TensorSpec{TensorRole::token_embedding, -1, -1, 12, 16, TensorClass::embedding});
  const std::vector<float> pos =
      load(base, TensorSpec{TensorRole::position_embedding, -1, -1, 8, 16, TensorClass::embedding});
  const std::vector<float> router = out.load(TensorSpec{TensorRole::router, 0, -1, 2, 16, TensorClass::f32_only});
  const std::string prompts[2] = {p1, p2};
  for (int e = 0; e < 2; ++e) {
    const std::string& p = prompts[e];
    std::vector<int> ids;
    for (char ch : p)
      ids.push_back(
          static_cast<int>(std::find(kChars.begin(), kChars.end(), static_cast<uint32_t>(ch)) - kChars.begin()));
    std::vector<size_t> starts = {0};
    if (ids.size() > 8) starts.push_back(ids.size() - 8);
    std::vector<double> mean(16, 0.0);
    for (size_t s : starts)
      for (size_t t = 0; t < 8 && s + t < ids.size(); ++t)
        for (size_t i = 0; i < 16; ++i) mean[i] += tok[static_cast<size_t>(ids[s + t]) * 16 + i] + pos[t * 16 + i];
    double norm = 0;
    for (double v : mean) norm += v * v;
    for (size_t i = 0; i < 16; ++i)
      EXPECT_NEAR(router[static_cast<size_t>(e) * 16 + i], mean[i] / std::sqrt(norm), 1e-5) << e << " " << i;
  }
  EXPECT_EQ(out.load(TensorSpec{TensorRole::router_bias, 2, -1, 2, 0, TensorClass::f32_only}),
            std::vector<float>(2, 0.f));
}

// The classifier router learns which expert's prompts a token comes from: on prompts of
// disjoint characters it must send each prompt's tokens to that prompt's expert.
TEST(Merge, ClassifierRouterSendsEachPromptToItsExpert) {
  test::TempDir tmp;
  constexpr ModelConfig dense = config_from_key("classic-d16-l3-h2-kv2-hd8-e1-k1-f32-v12-c8");
  const auto base = random_model(tmp, "base", 1, dense), d1 = random_model(tmp, "d1", 2, dense),
             d2 = random_model(tmp, "d2", 3, dense);
  const std::string p1 = "abcabcbacbbaccabacbabcab", p2 = "hijjihjihhijjjihhiijhjih";
  run_merge(parse_recipe({{"merge_method", "moe"},
                          {"base_model", base},
                          {"experts_per_token", 1},
                          {"gate_mode", "classifier"},
                          {"experts",
                           {{{"source_model", d1}, {"positive_prompts", {p1}}},
                            {{"source_model", d2}, {"positive_prompts", {p2}}}}}}),
            tmp / "moe");
  const converter::Checkpoint ck = converter::open_checkpoint(tmp / "moe");
  train::Model<float> model(train::inference_config(ck), 1);
  train::import_model(tmp / "moe", model);
  const std::string prompts[2] = {p1, p2};
  for (int e = 0; e < 2; ++e) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < 8; ++i)
      ids.push_back(static_cast<int32_t>(std::find(kChars.begin(), kChars.end(), static_cast<uint32_t>(prompts[e][i])) -
                                         kChars.begin()));
    model.forward(ids.data(), nullptr, 1, 8, false, 0);
    for (int l = 0; l < 3; ++l)
      for (int t = 0; t < 8; ++t)
        EXPECT_EQ(model.first_choice(l, t), e) << "prompt " << e << " layer " << l << " token " << t;
  }
}

TEST(Merge, MismatchesAreRefusedNamingTheDimension) {
  test::TempDir tmp;
  const auto a = random_model(tmp, "a", 1);
  ModelConfig wider = kClassic;
  wider.d_model = 32;
  wider.head_dim = 16;
  const auto b = random_model(tmp, "b", 2, wider);
  const auto c = random_model(tmp, "c", 3, kClassic, {'\n', ' ', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'k'});
  const std::string wide = merge_error(parse_recipe({{"merge_method", "linear"}, {"models", {a, b}}}), tmp / "out");
  EXPECT_NE(wide.find("d_model: 16 vs 32"), std::string::npos) << wide;
  // Names, numbers and keys in one order: a (d 16) first, then b (d 32).
  EXPECT_LT(wide.find("/a'"), wide.find("/b'")) << wide;
  EXPECT_LT(wide.find("classic-d16"), wide.find("classic-d32")) << wide;
  const std::string vocab = merge_error(parse_recipe({{"merge_method", "linear"}, {"models", {a, c}}}), tmp / "out");
  EXPECT_NE(vocab.find("vocabularies differ"), std::string::npos) << vocab;
  const std::string expert = merge_error(parse_recipe({{"merge_method", "moe"},
                                                       {"base_model", a},
                                                       {"gate_mode", "random"},
                                                       {"experts_per_token", 1},
                                                       {"experts", {{{"source_model", a}, {"expert", 2}}}}}),
                                         tmp / "out");
  EXPECT_NE(expert.find("has 2 expert(s)"), std::string::npos) << expert;
  const std::string missing =
      merge_error(parse_recipe({{"merge_method", "linear"}, {"models", {(tmp / "nope").string()}}}), tmp / "out");
  EXPECT_NE(missing.find("is not a directory"), std::string::npos) << missing;
  EXPECT_FALSE(std::filesystem::exists(tmp / "out"));  // nothing written
}

TEST(MergeCli, YamlRecipeAndFlagsGiveTheSameModel) {
  test::TempDir tmp;
  const auto a = random_model(tmp, "a", 1), b = random_model(tmp, "b", 2);
  {
    std::ofstream f(tmp / "recipe.yaml");
    f << "merge_method: slerp\nbase_model: " << a.string() << "\nmodels:\n  - model: " << b.string()
      << "\nparameters:\n  t:\n    - filter: self_attn\n      value: [0, 1]\n    - value: 0.3\n";
  }
  const auto r1 =
      test::run_program({MOE_MERGE_PATH, "--config", (tmp / "recipe.yaml").string(), "--out", (tmp / "m1").string()});
  ASSERT_EQ(r1.code, 0) << r1.err;
  EXPECT_NE(r1.out.find("slerp merge -> classic-d16-l3"), std::string::npos) << r1.out;
  const auto r2 = test::run_program({MOE_MERGE_PATH, "--method", "slerp", "--base", a.string(), "--model", b.string(),
                                     "--t", "0.3", "--out", (tmp / "m2").string()});
  ASSERT_EQ(r2.code, 0) << r2.err;
  // Same t outside attention; attention follows the gradient (layer 1 of 3 at t 0.5), so the files differ there only.
  const TensorSpec w1{TensorRole::expert_w1, 1, 0, kClassic.expert_hidden, kClassic.d_model, TensorClass::expert};
  const TensorSpec wq{TensorRole::wq, 1, -1, kClassic.q_dim(), kClassic.d_model, TensorClass::attention};
  EXPECT_EQ(load(tmp / "m1", w1), load(tmp / "m2", w1));
  EXPECT_NE(load(tmp / "m1", wq), load(tmp / "m2", wq));
  const auto bad =
      test::run_program({MOE_MERGE_PATH, "--method", "ties", "--model", a.string(), "--out", (tmp / "m3").string()});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("ties needs a base_model"), std::string::npos) << bad.err;
}

}  // namespace
