// The Hugging Face families beyond Mixtral (Qwen3-MoE, OLMoE, Granite-MoE, Qwen2-MoE):
// their config keys, the options moe_convert reads and the ones it refuses by name, and
// the parts the fixtures do not exercise (dense layers, clip_qkv), checked by an
// equivalence each must satisfy. The fixtures' logits are checked in test_reference.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "converter/atomic_file.hpp"
#include "converter/checkpoint.hpp"
#include "converter/input_error.hpp"
#include "moe/engine.hpp"
#include "support/test_support.hpp"

namespace moe {
namespace {

using nlohmann::json;
using test::EditableCheckpoint;

using test::convert_fp32;
using test::relative_error;
const auto expect_refusal = test::expect_conversion_refusal;

// Logits of every position of `ids` from a converted model compiled as C.
template <ModelConfig C>
std::vector<float> logits_of(const converter::Conversion& c, const std::vector<int32_t>& ids) {
  EXPECT_EQ(c.config, C) << ConfigKey(c.config).c_str();
  const test::AlignedBuffer buf(c.bytes);
  ModelFile file;
  EXPECT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
  auto engine = std::make_unique<Engine<C>>();
  EXPECT_TRUE(engine->load(file).ok());
  std::vector<float> out(ids.size() * C.vocab_size);
  EXPECT_TRUE(engine->prefill(ids.data(), static_cast<int>(ids.size()), out.data()).ok());
  return out;
}

TEST(FamilyConfigKey, OptionalPartsRoundTrip) {
  const char* keys[] = {"llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkh",
                        "llama-d64-l2-h4-kv4-hd16-e8-k2-f48-v256-c128-qkw",
                        "llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64",
                        "llama-d64-l48-h4-kv4-hd16-e8-k2-f32-v256-c128-qkh-fd128-dl800000000001",
                        "llama-d64-l4-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64-fd96-dl5"};
  for (const char* key : keys) {
    ModelConfig c{};
    ASSERT_TRUE(try_parse_config_key(key, c)) << key;
    EXPECT_EQ(config_problem(c), nullptr) << key;
    EXPECT_STREQ(ConfigKey(c).c_str(), key);
  }
  ModelConfig c{};
  ASSERT_TRUE(try_parse_config_key(keys[3], c));
  EXPECT_TRUE(c.is_dense_layer(0));
  EXPECT_FALSE(c.is_dense_layer(1));
  EXPECT_TRUE(c.is_dense_layer(47));
  EXPECT_EQ(c.qk_norm, QkNorm::per_head);
  EXPECT_EQ(c.max_ffn_hidden(), 128);
  // Out of order, a zero width, a width without its layers, a dense layer past the last.
  for (const char* bad :
       {"llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkvb-qkh", "llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-s0",
        "llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-fd64", "llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkx"}) {
    EXPECT_FALSE(try_parse_config_key(bad, c)) << bad;
  }
  ASSERT_TRUE(try_parse_config_key("llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-fd64-dl4", c));
  EXPECT_STREQ(config_problem(c), "a dense layer is beyond the last layer");
  ASSERT_TRUE(try_parse_config_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16-qkw", c));
  EXPECT_NE(config_problem(c), nullptr);
}

// What each fixture's config.json becomes, and the format version its file gets: a
// Mixtral model stays readable by engines built before the families came.
TEST(Families, ConfigsAndFormatVersions) {
  const std::pair<const char*, const char*> expected[] = {
      {"qwen3moe-tiny-a", "llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkh"},
      {"olmoe-tiny-a", "llama-d64-l2-h4-kv4-hd16-e8-k2-f48-v256-c128-qkw"},
      {"granitemoe-tiny-a", "llama-d64-l2-h4-kv2-hd16-e8-k2-f32-v256-c128"},
      {"qwen2moe-tiny-a", "llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64"},
      {"mixtral-tiny-a", "llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128"}};
  for (const auto& [fixture, key] : expected) {
    SCOPED_TRACE(fixture);
    const converter::Conversion c = convert_fp32(test::fixture_dir(fixture));
    EXPECT_STREQ(ConfigKey(c.config).c_str(), key);
    const test::AlignedBuffer buf(c.bytes);
    ModelFile file;
    ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
    EXPECT_EQ(file.model().format_version(), std::string(fixture) == "mixtral-tiny-a" ? 1u : 2u);
    const ModelConstants& k = file.constants();
    if (std::string(fixture) == "granitemoe-tiny-a") {
      EXPECT_EQ(k.attention_scale, AttentionScaleRule::multiplier);
      EXPECT_FLOAT_EQ(k.attention_multiplier, 0.0625f);
      EXPECT_FLOAT_EQ(k.embedding_multiplier, 6.f);
      EXPECT_FLOAT_EQ(k.residual_multiplier, 0.4f);
      EXPECT_FLOAT_EQ(k.logits_scaling, 1.5f);
      EXPECT_EQ(k.norm_eps, 1e-6f);
      // Tied: the head is the embedding table's bytes, stored once.
      const int last = tensor_count(file.config()) - 1;
      EXPECT_EQ(file.tensor(last).data()->data(), file.tensor(0).data()->data());
    }
    if (std::string(fixture) == "olmoe-tiny-a" || std::string(fixture) == "qwen2moe-tiny-a") {
      EXPECT_EQ(k.router_weights, RouterWeights::full_softmax);
    }
    if (std::string(fixture) == "qwen3moe-tiny-a") {
      EXPECT_EQ(k.router_weights, RouterWeights::topk_softmax);
    }
  }
}

TEST(Families, UnknownOptionsAreRefusedByName) {
  {
    EditableCheckpoint ck("qwen3moe-tiny-a");
    ck.config["use_qk_layernorm"] = true;
    expect_refusal(ck.write(), "qwen3_moe option 'use_qk_layernorm' = true is not known to moe_convert");
  }
  {
    EditableCheckpoint ck("qwen3moe-tiny-a");
    ck.config["partial_rotary_factor"] = 0.5;
    expect_refusal(ck.write(), "option 'partial_rotary_factor' = 0.5 is not implemented");
  }
  {
    // A second, older spelling that asks for more than the first: refused too.
    EditableCheckpoint ck("olmoe-tiny-a");
    ck.config["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
    expect_refusal(ck.write(), "rope type 'linear' is not supported");
  }
  {
    EditableCheckpoint ck("olmoe-tiny-a");
    ck.config["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "yarn"}, {"factor", 4.0}};
    expect_refusal(ck.write(), "rope type 'yarn' is not supported");
  }
  {
    EditableCheckpoint ck("olmoe-tiny-a");
    ck.config["rope_parameters"]["partial_rotary_factor"] = 0.5;
    expect_refusal(ck.write(), "option 'rope_parameters.partial_rotary_factor' = 0.5 is not implemented");
  }
  {
    EditableCheckpoint ck("qwen3moe-tiny-a");
    ck.config["attention_bias"] = true;
    expect_refusal(ck.write(), "option 'attention_bias' = true is not implemented");
  }
  {
    EditableCheckpoint ck("qwen3moe-tiny-a");
    ck.config["use_sliding_window"] = true;
    ck.config["sliding_window"] = 16;
    expect_refusal(ck.write(), "sliding_window 16 is smaller than the context");
  }
  {
    EditableCheckpoint ck("granitemoe-tiny-a");
    ck.config["hidden_act"] = "gelu";
    expect_refusal(ck.write(), "hidden_act 'gelu' is not supported");
  }
  {
    EditableCheckpoint ck("qwen2moe-tiny-a");
    ck.config["mlp_only_layers"] = {5};
    expect_refusal(ck.write(), "option 'mlp_only_layers' = [5] names a layer outside 0..1");
  }
  {
    EditableCheckpoint ck("qwen2moe-tiny-a");
    ck.config["mlp_only_layers"] = {0, 1};
    expect_refusal(ck.write(), "every layer is a dense MLP: not a mixture-of-experts model");
  }
  {
    EditableCheckpoint ck("qwen2moe-tiny-a");
    ck.config["model_type"] = "deepseek_v2";
    expect_refusal(ck.write(), "model_type 'deepseek_v2'");
    expect_refusal(ck.tmp.path(), "'mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe', 'granitemoe' and 'makemoe'");
  }
}

// The config.json of five real checkpoints (tests/fixtures/real_shapes.json, copied from
// their published files): each is read without a refusal, into the structure the model
// card describes.
TEST(Families, RealHubConfigsAreRead) {
  const json models = json::parse(test::read_file(test::fixture_dir("real_shapes.json")))["models"];
  const std::pair<const char*, const char*> expected[] = {
      {"ibm-granite/granite-3.1-1b-a400m-instruct", "llama-d1024-l24-h16-kv8-hd64-e32-k8-f512-v49155-c131072"},
      {"allenai/OLMoE-1B-7B-0924", "llama-d2048-l16-h16-kv16-hd128-e64-k8-f1024-v50304-c4096-qkw"},
      {"Qwen/Qwen1.5-MoE-A2.7B", "llama-d2048-l24-h16-kv16-hd128-e60-k4-f1408-v151936-c8192-qkvb-s5632"},
      {"Qwen/Qwen3-30B-A3B", "llama-d2048-l48-h32-kv4-hd128-e128-k8-f768-v151936-c40960-qkh"},
      {"mistralai/Mixtral-8x7B-v0.1", "llama-d4096-l32-h32-kv8-hd128-e8-k2-f14336-v32000-c32768"}};
  for (const auto& [name, key] : expected) {
    SCOPED_TRACE(name);
    test::TempDir tmp;
    converter::write_file_atomically(tmp / "config.json", models[name]["config"].dump());
    converter::write_safetensors(tmp / "model.safetensors", {});
    const converter::Checkpoint ck = converter::open_checkpoint(tmp.path());
    EXPECT_STREQ(ConfigKey(ck.config).c_str(), key);
    if (std::string(name).find("granite") != std::string::npos) {
      EXPECT_TRUE(ck.tied_embeddings);
      EXPECT_FLOAT_EQ(ck.constants.attention_multiplier, 0.015625f);
      EXPECT_FLOAT_EQ(ck.constants.rope_theta, 1.5e6f);
    }
  }
}

// Qwen1.5-MoE ships a window of 32768 with use_sliding_window false: ignored, as
// transformers ignores it. And the transformers 4.x spellings convert to the same model.
TEST(Families, InactiveWindowAndOlderConfigLayoutAreAccepted) {
  EditableCheckpoint ck("qwen2moe-tiny-a");
  ck.config["sliding_window"] = 32;
  ck.config["use_sliding_window"] = false;
  ck.config["layer_types"] = {"sliding_attention", "full_attention"};
  const double theta = ck.config["rope_parameters"]["rope_theta"].get<double>();
  ck.config.erase("rope_parameters");
  ck.config.erase("qkv_bias");  // 4.x: the biases are always there
  ck.config["rope_theta"] = theta;
  ck.config["rope_scaling"] = nullptr;
  ck.config["partial_rotary_factor"] = 1.0;  // every dimension rotated: the default
  ck.config["torch_dtype"] = "float32";
  ck.config.erase("dtype");
  const converter::Conversion c = convert_fp32(ck.write());
  const converter::Conversion ref = convert_fp32(test::fixture_dir("qwen2moe-tiny-a"));
  EXPECT_EQ(c.config, ref.config);
  const std::vector<int32_t> ids = {3, 1, 4, 1, 5, 9, 2, 6};
  constexpr ModelConfig kQwen2 = config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64");
  EXPECT_EQ(logits_of<kQwen2>(c, ids), logits_of<kQwen2>(ref, ids));
}

// A dense layer is a mixture of identical experts: with every expert of layer 0 equal to
// one MLP and the top-k weights renormalised (they sum to 1), layer 0 computes that MLP
// whatever the router says. So Qwen3-MoE with decoder_sparse_step 2 (layer 0 dense,
// layer 1 MoE) holding that MLP must give the logits of the all-MoE model with copies.
TEST(Families, DenseLayerEqualsAMixtureOfIdenticalExperts) {
  constexpr int d = 64, I = 32, E = 8;
  EditableCheckpoint moe("qwen3moe-tiny-a");
  EditableCheckpoint dense("qwen3moe-tiny-a");
  const std::string p = "model.layers.0.mlp.";
  for (const char* w : {"gate_proj", "up_proj", "down_proj"}) {
    const std::string e0 = p + "experts.0." + w + ".weight";
    const std::vector<int64_t> shape = moe.tensor(e0).shape;
    const float* mlp = moe.values(e0);  // expert 0 of layer 0 becomes the dense MLP
    const std::vector<float> copy(mlp, mlp + d * I);
    for (int e = 1; e < E; ++e)
      std::copy(copy.begin(), copy.end(), moe.values(p + "experts." + std::to_string(e) + "." + w + ".weight"));
    for (int e = 0; e < E; ++e) dense.remove(p + "experts." + std::to_string(e) + "." + w + ".weight");
    dense.tensors.push_back(converter::f32_tensor(p + w + ".weight", shape, copy.data()));
  }
  dense.remove(p + "gate.weight");
  dense.config["decoder_sparse_step"] = 2;
  dense.config["intermediate_size"] = I;
  const converter::Conversion cm = convert_fp32(moe.write());
  const converter::Conversion cd = convert_fp32(dense.write());
  constexpr ModelConfig kAllMoe = config_from_key("llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkh");
  constexpr ModelConfig kDense0 = config_from_key("llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkh-fd32-dl1");
  const std::vector<int32_t> ids = {7, 100, 3, 255, 42, 42, 0, 19, 77, 128, 5};
  const std::vector<float> a = logits_of<kAllMoe>(cm, ids), b = logits_of<kDense0>(cd, ids);
  const double err = relative_error(b.data(), a);
  std::printf("  dense layer 0 vs %d identical experts: %.2e x max|logit|\n", E, err);
  EXPECT_LT(err, 1e-5);
  // And the layer is really dense: other dense weights give other logits.
  dense.values(p + "up_proj.weight")[0] += 1.f;
  EXPECT_GT(relative_error(logits_of<kDense0>(convert_fp32(dense.write()), ids).data(), a), 1e-4);
}

// OLMoE's clip_qkv: a bound no value reaches changes nothing (the reference's logits
// still match); a tight one clamps q, k and v and moves the logits far from them.
TEST(Families, ClipQkvIsAppliedWhereItBinds) {
  constexpr ModelConfig kOlmoe = config_from_key("llama-d64-l2-h4-kv4-hd16-e8-k2-f48-v256-c128-qkw");
  const auto cases = test::load_reference("olmoe-tiny-a");
  const auto& rc = cases[1];
  const auto last_row = [&](const std::vector<float>& all) {
    return std::vector<float>(all.end() - kOlmoe.vocab_size, all.end());
  };
  for (double clip : {1e6, 0.05}) {
    EditableCheckpoint ck("olmoe-tiny-a");
    ck.config["clip_qkv"] = clip;
    const converter::Conversion c = convert_fp32(ck.write());
    const double err = relative_error(last_row(logits_of<kOlmoe>(c, rc.input_ids)).data(), rc.logits.back());
    std::printf("  clip_qkv %g: %.2e x max|ref|\n", clip, err);
    if (clip > 1) {
      EXPECT_LT(err, 1e-4);
    } else {
      EXPECT_GT(err, 1e-2);
    }
  }
}

}  // namespace
}  // namespace moe
