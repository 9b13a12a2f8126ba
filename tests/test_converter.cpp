// moe_convert's library on real and deliberately broken checkpoints: F32/F16/BF16
// tensors, sharded indexes, both rope_theta spellings, tied embeddings; clear refusals
// for missing tensors, wrong shapes, unsupported dtypes and architectures, NaN/Inf;
// crash-safe writes, including a full disk.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <fstream>
#include <limits>
#include <random>
#include <nlohmann/json.hpp>

#include "converter/atomic_file.hpp"
#include "converter/checkpoint_writer.hpp"
#include "converter/input_error.hpp"
#include "converter/quantize.hpp"
#include "converter/safetensors.hpp"
#include "platform/thread_pool.hpp"
#include "support/test_support.hpp"

namespace moe {
namespace {

using nlohmann::json;

using test::EditableCheckpoint;

using test::convert_fp32;
const auto expect_refusal = test::expect_conversion_refusal;

struct Opened {
  test::AlignedBuffer buf;
  ModelFile file;
  explicit Opened(const converter::Conversion& c) : buf(c.bytes) {
    const Error e = ModelFile::open(buf.data(), buf.size(), file);
    EXPECT_TRUE(e.ok()) << e.what();
  }
  // f32 data of tensor `index` (the canonical layout's order).
  std::vector<float> f32(int index) const {
    const auto* t = &file.tensor(index);
    const auto* p = reinterpret_cast<const float*>(t->data()->data());
    return std::vector<float>(p, p + t->data()->size() / 4);
  }
};

uint16_t bf16_round(float f) {  // round to nearest even, as torch's .to(bfloat16)
  const uint32_t u = bits_from_f32(f);
  return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

// ---- input layouts ----------------------------------------------------------------------

TEST(Converter, ReadsF16AndBf16Tensors) {
  for (const char* dtype : {"F16", "BF16"}) {
    SCOPED_TRACE(dtype);
    EditableCheckpoint ck("mixtral-tiny-a");
    std::map<std::string, std::vector<float>> expected;
    for (auto& t : ck.tensors) {
      const auto* v = reinterpret_cast<const float*>(t.data.data());
      const size_t n = t.data.size() / 4;
      std::vector<uint8_t> half(n * 2);
      std::vector<float>& want = expected[t.name];
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = std::string(dtype) == "F16" ? float_to_half(v[i]) : bf16_round(v[i]);
        half[2 * i] = static_cast<uint8_t>(h & 0xff);
        half[2 * i + 1] = static_cast<uint8_t>(h >> 8);
        want.push_back(std::string(dtype) == "F16" ? half_to_float(h) : f32_from_bits(static_cast<uint32_t>(h) << 16));
      }
      t.dtype = dtype;
      t.data = half;
    }
    const converter::Conversion c = convert_fp32(ck.write());
    Opened o(c);
    EXPECT_EQ(o.f32(0), expected["model.embed_tokens.weight"]);
    EXPECT_EQ(o.f32(2), expected["model.layers.0.self_attn.q_proj.weight"]);
  }
}

TEST(Converter, ShardedCheckpointEqualsSingleFile) {
  EditableCheckpoint ck("mixtral-tiny-a");
  const auto single = convert_fp32(test::fixture_dir("mixtral-tiny-a"));
  std::filesystem::remove(ck.tmp / "model.safetensors");
  std::vector<converter::SafetensorOut> a, b;
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const bool first = i % 2 == 0;
    (first ? a : b).push_back(ck.tensors[i]);
    index["weight_map"][ck.tensors[i].name] =
        first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  converter::write_safetensors(ck.tmp / "model-00001-of-00002.safetensors", a);
  converter::write_safetensors(ck.tmp / "model-00002-of-00002.safetensors", b);
  converter::write_file_atomically(ck.tmp / "model.safetensors.index.json", index.dump());
  const auto sharded = convert_fp32(ck.tmp.path());
  Opened x(single), y(sharded);
  ASSERT_EQ(x.file.model().tensors()->size(), y.file.model().tensors()->size());
  for (flatbuffers::uoffset_t i = 0; i < x.file.model().tensors()->size(); ++i) {
    EXPECT_EQ(x.file.tensor(static_cast<int>(i)).crc32c(), y.file.tensor(static_cast<int>(i)).crc32c()) << i;
  }
  // An index naming a shard that is gone is refused by name.
  std::filesystem::remove(ck.tmp / "model-00002-of-00002.safetensors");
  expect_refusal(ck.tmp.path(), "shard '" + (ck.tmp / "model-00002-of-00002.safetensors").string() +
                                    "' named by the index is missing");
}

TEST(Converter, RopeThetaNestedOrTopLevel) {
  Opened nested(convert_fp32(test::fixture_dir("mixtral-tiny-a")));
  EXPECT_EQ(nested.file.constants().rope_theta, 10000.f);
  EditableCheckpoint ck("mixtral-tiny-a");
  ck.config.erase("rope_parameters");
  ck.config["rope_theta"] = 500000.0;
  Opened top(convert_fp32(ck.write()));
  EXPECT_EQ(top.file.constants().rope_theta, 500000.f);
  ck.config.erase("rope_theta");
  const auto c = convert_fp32(ck.write());
  Opened absent(c);
  EXPECT_EQ(absent.file.constants().rope_theta, 1e6f);
  ASSERT_FALSE(c.notes.empty());
  EXPECT_NE(c.notes[0].find("default 1e6"), std::string::npos);
}

TEST(Converter, TiedEmbeddingsShareOneCopy) {
  EditableCheckpoint ck("mixtral-tiny-a");
  ck.remove("lm_head.weight");
  ck.config["tie_word_embeddings"] = true;
  const auto c = convert_fp32(ck.write());
  Opened o(c);
  const int lm_head = tensor_count(o.file.config()) - 1;
  EXPECT_EQ(o.file.tensor(lm_head).data()->data(), o.file.tensor(0).data()->data());
  EXPECT_LT(c.bytes.size(), convert_fp32(test::fixture_dir("mixtral-tiny-a")).bytes.size() - 20000);
}

// Format version 3, as moe_convert streams large models (forced here on small ones):
// every tensor's bytes, scales, dtype and group equal the in-memory conversion's, tied
// tensors still share their bytes, and damage to the payload after the FlatBuffer is
// found at load.
TEST(Converter, StreamedFormat3HoldsTheSameTensors) {
  for (const char* fixture : {"mixtral-tiny-a", "granitemoe-tiny-a", "makemoe-tiny", "qwen2moe-tiny-a"}) {
    SCOPED_TRACE(fixture);
    converter::ConvertOptions options;
    options.recipe = test::recipe(DType::i8, DType::f16, DType::f16, 32);  // no int4: format 3, not 5
    options.stream_from_bytes = 0;
    test::TempDir tmp;
    const converter::Conversion streamed =
        converter::convert_to_file(test::fixture_dir(fixture), options, tmp / "s.moe");
    EXPECT_EQ(streamed.format_version, 3u);
    EXPECT_TRUE(streamed.bytes.empty());
    const converter::Conversion memory = converter::convert_checkpoint(test::fixture_dir(fixture), options);
    const std::string bytes = test::read_file(tmp / "s.moe");
    EXPECT_EQ(bytes.size(), streamed.file_bytes);
    test::AlignedBuffer buf(bytes.data(), bytes.size());
    ModelFile s;
    ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), s).ok());
    Opened m(memory);
    EXPECT_EQ(s.format_version(), 3u);
    EXPECT_EQ(s.config(), m.file.config());
    EXPECT_EQ(s.constants(), m.file.constants());
    for (int i = 0; i < tensor_count(s.config()); ++i) {
      const TensorBytes a = s.bytes(i), b = m.file.bytes(i);
      ASSERT_EQ(a.bytes, b.bytes) << i;
      EXPECT_EQ(std::memcmp(a.data, b.data, a.bytes), 0) << "tensor " << i;
      ASSERT_EQ(a.scale_count, b.scale_count) << i;
      if (a.scale_count > 0) {
        EXPECT_EQ(std::memcmp(a.scales, b.scales, a.scale_count * 4), 0) << "tensor " << i;
      }
      EXPECT_EQ(s.tensor(i).dtype(), m.file.tensor(i).dtype());
      EXPECT_EQ(s.tensor(i).group_size(), m.file.tensor(i).group_size());
      EXPECT_EQ(s.tensor(i).crc32c(), m.file.tensor(i).crc32c());
    }
    if (std::string(fixture) == "granitemoe-tiny-a") {  // tied
      EXPECT_EQ(s.bytes(tensor_count(s.config()) - 1).data, s.bytes(0).data);
    }
    ModelFile damaged;
    const Error cut = ModelFile::open(buf.data(), buf.size() - 1, damaged);
    EXPECT_EQ(cut.code, ErrorCode::corrupt);
    EXPECT_NE(std::string(cut.what()).find("outside the file"), std::string::npos) << cut.what();
    buf.data()[buf.size() - 100] ^= 0x40;
    const Error flipped = ModelFile::open(buf.data(), buf.size(), damaged);
    EXPECT_NE(std::string(flipped.what()).find("checksum"), std::string::npos) << flipped.what();
  }
}

TEST(Converter, MakemoeHeadsAreConcatenatedInOrder) {
  Opened o(convert_fp32(test::fixture_dir("makemoe-tiny")));
  const converter::TensorStore store(test::fixture_dir("makemoe-tiny"));
  // Canonical order: token emb, position emb, attn_norm, attn_norm_bias, wq, ...
  const std::vector<float> wq = o.f32(4);
  for (int h = 0; h < 4; ++h) {
    const auto head = store.read_f32("blocks.0.sa.heads." + std::to_string(h) + ".query.weight");
    EXPECT_TRUE(std::equal(head.begin(), head.end(), wq.begin() + h * 8 * 32)) << "head " << h;
  }
  EXPECT_EQ(o.file.tokenizer().size(), 65);
  EXPECT_EQ(o.file.tokenizer().code_point(0), static_cast<uint32_t>('\n'));
}

TEST(Converter, MakemoeCapacityFactor) {
  const auto c = convert_fp32(test::fixture_dir("makemoe-tiny"));
  EXPECT_EQ(Opened(c).file.constants().capacity_factor, 1.0);  // makeMoE's default when config.json omits it
  bool noted = false;
  for (const auto& n : c.notes) noted = noted || n.find("capacity_factor") != std::string::npos;
  EXPECT_TRUE(noted);
  EditableCheckpoint ck("makemoe-tiny");
  ck.config["capacity_factor"] = 1.25;
  EXPECT_EQ(Opened(convert_fp32(ck.write())).file.constants().capacity_factor, 1.25);
  ck.config["capacity_factor"] = nullptr;
  EXPECT_EQ(Opened(convert_fp32(ck.write())).file.constants().capacity_factor, 0.0);
  ck.config["capacity_factor"] = "lots";
  expect_refusal(ck.write(), "capacity_factor must be a number >= 0 or null");
}

TEST(Converter, MakemoeTokenizer) {
  EditableCheckpoint ck("makemoe-tiny");
  converter::write_file_atomically(ck.tmp / "tokenizer.json", std::string(R"({"type": "char", "chars": "abc"})"));
  expect_refusal(ck.write(), "has 3 characters, config.json says vocab_size 65");
  std::filesystem::remove(ck.tmp / "tokenizer.json");
  const auto c = convert_fp32(ck.write());
  EXPECT_FALSE(Opened(c).file.tokenizer().present());
}

// ---- refusals -------------------------------------------------------------------------

TEST(Converter, MissingTensorIsNamed) {
  EditableCheckpoint ck("mixtral-tiny-a");
  ck.remove("model.layers.1.block_sparse_moe.experts.2.w3.weight");
  expect_refusal(
      ck.write(),
      "missing tensor 'model.layers.1.block_sparse_moe.experts.2.w3.weight' (expert_w3 of layer 1, expert 2)");
}

TEST(Converter, WrongShapeNamesExpectedAndFound) {
  EditableCheckpoint ck("mixtral-tiny-a");
  auto& q = ck.tensor("model.layers.0.self_attn.q_proj.weight");
  q.shape = {64, 32};
  q.data.resize(64 * 32 * 4);
  expect_refusal(ck.write(), "tensor 'model.layers.0.self_attn.q_proj.weight' has shape [64, 32], expected [64, 64]");
}

TEST(Converter, UnsupportedDtypeIsRefused) {
  EditableCheckpoint ck("mixtral-tiny-a");
  auto& t = ck.tensor("model.norm.weight");
  t.dtype = "F64";
  t.data.resize(t.data.size() * 2);
  expect_refusal(ck.write(), "tensor 'model.norm.weight' has dtype F64; moe_convert reads F32, F16 and BF16");
}

TEST(Converter, NanAndInfAreRefusedWithTheirPlace) {
  EditableCheckpoint ck("mixtral-tiny-a");
  ck.values("model.layers.0.block_sparse_moe.experts.1.w2.weight")[2 * 128 + 5] = NAN;
  expect_refusal(
      ck.write(),
      "tensor 'model.layers.0.block_sparse_moe.experts.1.w2.weight' has a NaN at element 261 (row 2, column 5)");
  ck.values("model.layers.0.block_sparse_moe.experts.1.w2.weight")[2 * 128 + 5] = 0.f;
  ck.values("model.norm.weight")[3] = -INFINITY;
  expect_refusal(ck.write(), "tensor 'model.norm.weight' has a infinite value at element 3");
}

TEST(Converter, UnsupportedArchitecturesAndOptions) {
  EditableCheckpoint ck("mixtral-tiny-a");
  ck.config["model_type"] = "llama";
  expect_refusal(ck.write(), "unsupported architecture: model_type 'llama'");
  ck.config["model_type"] = "mixtral";
  ck.config["hidden_act"] = "gelu";
  expect_refusal(ck.write(), "hidden_act 'gelu' is not supported");
  ck.config["hidden_act"] = "silu";
  ck.config["rope_parameters"]["rope_type"] = "yarn";
  expect_refusal(ck.write(), "rope type 'yarn' is not supported");
  ck.config["rope_parameters"]["rope_type"] = "default";
  ck.config["sliding_window"] = 32;
  expect_refusal(ck.write(), "sliding_window 32 is smaller than the context");
  ck.config["sliding_window"] = nullptr;
  ck.config["num_experts_per_tok"] = 5;
  expect_refusal(ck.write(), "top_k must be at most n_experts");
  ck.config["num_experts_per_tok"] = 2;
  ck.config["hidden_size"] = 0;
  expect_refusal(ck.write(), "'hidden_size' must be a positive integer, found 0");
}

// Found by fuzz_checkpoint: a field of the wrong JSON type escaped as nlohmann's
// type_error instead of a InputError naming the file.
TEST(Converter, FieldsOfTheWrongJsonTypeAreNamed) {
  EditableCheckpoint ck("makemoe-tiny");
  ck.config["model_type"] = 16;
  expect_refusal(ck.write(), "has a field of the wrong type");
  EditableCheckpoint mix("mixtral-tiny-a");
  mix.config["hidden_act"] = 3;
  expect_refusal(mix.write(), "has a field of the wrong type");
}

TEST(Converter, BadDirectoriesAndFiles) {
  test::TempDir tmp;
  expect_refusal(tmp / "nope", "is not a checkpoint directory");
  expect_refusal(tmp.path(), "no config.json in");
  converter::write_file_atomically(tmp / "config.json", std::string("{not json"));
  expect_refusal(tmp.path(), "is not valid JSON");
  EditableCheckpoint ck("mixtral-tiny-a");
  ck.write();
  std::filesystem::resize_file(ck.tmp / "model.safetensors", 5000);
  expect_refusal(ck.tmp.path(), "truncated");
  std::filesystem::remove(ck.tmp / "model.safetensors");
  expect_refusal(ck.tmp.path(), "no model.safetensors or model.safetensors.index.json");
}

TEST(Converter, MaxContextOverride) {
  Opened o(convert_fp32(test::fixture_dir("mixtral-tiny-a"), 64));
  EXPECT_EQ(o.file.config().max_context, 64);
  // Above the trained length: allowed (transformers runs past it too), with a warning.
  const converter::Conversion longer = convert_fp32(test::fixture_dir("mixtral-tiny-a"), 256);
  EXPECT_EQ(Opened(longer).file.config().max_context, 256);
  bool warned = false;
  for (const auto& n : longer.notes)
    warned = warned || n.find("above the 128 positions the model was trained for") != std::string::npos;
  EXPECT_TRUE(warned);
}

// ---- quantization -----------------------------------------------------------------------

// The random-weight checkpoints behind the benchmarks and fuzz seeds: deterministic per
// seed, in the layout of the config's family, readable by the converter, with matrix
// entries of variance 1/cols.
TEST(RandomCheckpoint, DeterministicConvertibleAndScaled) {
  test::TempDir tmp;
  const ModelConfig llama = config_from_key("llama-d32-l2-h4-kv2-hd8-e4-k2-f64-v50-c32");
  converter::write_random_checkpoint(tmp / "a", llama, 5);
  converter::write_random_checkpoint(tmp / "b", llama, 5);
  converter::write_random_checkpoint(tmp / "c", llama, 6);
  EXPECT_EQ(test::read_file(tmp / "a" / "model.safetensors"), test::read_file(tmp / "b" / "model.safetensors"));
  EXPECT_NE(test::read_file(tmp / "a" / "model.safetensors"), test::read_file(tmp / "c" / "model.safetensors"));
  const converter::Checkpoint ck = converter::open_checkpoint(tmp / "a");
  EXPECT_STREQ(ck.layout->name, "hf-mixtral");
  EXPECT_EQ(ck.config, llama);
  double sum = 0, sum_sq = 0;
  const std::vector<float> w = ck.store->read_f32("model.layers.1.block_sparse_moe.experts.2.w2.weight");  // [32, 64]
  ASSERT_EQ(w.size(), 32u * 64u);
  for (float v : w) sum += v, sum_sq += static_cast<double>(v) * v;
  EXPECT_NEAR(sum / static_cast<double>(w.size()), 0.0, 0.01);
  EXPECT_NEAR(sum_sq / static_cast<double>(w.size()), 1.0 / 64, 0.1 / 64);
  EXPECT_NO_THROW(converter::convert_checkpoint(tmp / "a", converter::ConvertOptions{}));

  const ModelConfig classic = config_from_key("classic-d16-l1-h2-kv2-hd8-e2-k1-f32-v4-c8");
  converter::write_random_checkpoint(tmp / "k", classic, 1, {'a', 'b', 0xe9, 0x20ac});
  const converter::Checkpoint kc = converter::open_checkpoint(tmp / "k");
  EXPECT_STREQ(kc.layout->name, "makemoe");
  EXPECT_EQ(kc.chars, (std::vector<uint32_t>{'a', 'b', 0xe9, 0x20ac}));
  EXPECT_EQ(kc.constants.capacity_factor, 0.);
  EXPECT_THROW(converter::write_random_checkpoint(tmp / "x", classic, 1, {'a'}), InputError);
}

TEST(Quantize, Int8ErrorIsAtMostHalfAStep) {
  std::vector<float> w(4 * 64);
  for (size_t i = 0; i < w.size(); ++i)
    w[i] = std::sin(static_cast<float>(i) * 0.37f) * (1 + static_cast<float>(i % 7));
  for (int row = 0; row < 64; ++row) w[static_cast<size_t>(3 * 64 + row)] = 0.f;  // an all-zero row
  for (int group : {0, 16, 32, 64, 48}) {
    const converter::Quantized q = converter::quantize(w, 4, 64, DType::i8, group, "w");
    const int g = (group > 0 && 64 % group == 0) ? group : 64;
    EXPECT_EQ(q.group_size, g);
    for (size_t i = 0; i < w.size(); ++i) {
      const float scale = q.scales[i / 64 * (64 / static_cast<size_t>(g)) + (i % 64) / static_cast<size_t>(g)];
      EXPECT_GT(scale, 0.f);
      EXPECT_LE(std::fabs(converter::dequantized(q, 64, static_cast<long>(i)) - w[i]), scale * 0.5f + 1e-7f);
    }
  }
}

// Found by fuzz_checkpoint: a row of the smallest denormals made amax / 127 underflow
// to 0, and 0 / 0 produced NaN in the int8 cast.
TEST(Quantize, DenormalRowsGetAPositiveScaleAndZeros) {
  const float tiny = std::numeric_limits<float>::denorm_min();
  const std::vector<float> w = {tiny, -tiny, 0.f, tiny, 1.f, -0.5f, 0.25f, 0.f};
  const converter::Quantized q = converter::quantize(w, 2, 4, DType::i8, 0, "w");
  ASSERT_EQ(q.scales.size(), 2u);
  EXPECT_EQ(q.scales[0], 1.f);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(converter::dequantized(q, 4, i), 0.f);
  EXPECT_FLOAT_EQ(q.scales[1], 1.f / 127.f);
  EXPECT_FLOAT_EQ(converter::dequantized(q, 4, 4), 1.f);
}

TEST(Quantize, Fp16OverflowIsRefused) {
  const std::vector<float> w = {1.f, 70000.f};
  EXPECT_THROW((void)converter::quantize(w, 1, 2, DType::f16, 0, "big"), InputError);
}

// llama.cpp's Q4_0 rule, worked by hand on 1..32: the largest value (32) maps to -8, so
// scale = 32 / -8 = -4, and q = min(15, (int)(v / -4 + 8.5)): 1 -> 8, 4 -> 7, 32 -> 0.
TEST(Quantize, Int4LlamaQ4_0RuleByHand) {
  float v[32];
  for (int i = 0; i < 32; ++i) v[i] = static_cast<float>(i + 1);
  const converter::Q4Block b = converter::quantize_block_q4(v, converter::Q4Rule::llama_q4_0);
  EXPECT_EQ(half_to_float(b.scale), -4.f);
  EXPECT_EQ(b.nibbles[0], 8);   // 1
  EXPECT_EQ(b.nibbles[3], 7);   // 4 -> 7.5 -> 7
  EXPECT_EQ(b.nibbles[31], 0);  // 32
  EXPECT_EQ(b.nibbles[17], 4);  // 18 -> -4.5 + 8.5 = 4
}

// The least-squares rule: per block, its squared error is never above Q4_0's (which is
// one of its candidates), and over Gaussian, smooth, outlier and all-zero blocks it is
// clearly below on the whole. Through quantize(), a whole tensor's error is too.
TEST(Quantize, Int4BlocksNeverWorseThanQ4_0) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 0.02f);
  const auto error = [](const float* v, const converter::Q4Block& b) {
    double e = 0;
    for (int i = 0; i < 32; ++i) {
      const double d = static_cast<double>(static_cast<float>(b.nibbles[i] - 8) * half_to_float(b.scale)) - v[i];
      e += d * d;
    }
    return e;
  };
  double total_ours = 0, total_q4_0 = 0;
  for (int block = 0; block < 400; ++block) {
    float v[32];
    for (int i = 0; i < 32; ++i) v[i] = normal(rng);
    if (block % 4 == 1)
      for (int i = 0; i < 32; ++i) v[i] = std::sin(0.3f * static_cast<float>(i + block));
    if (block % 4 == 2) v[block % 32] = 0.5f;
    if (block == 3) std::fill(v, v + 32, 0.f);
    const converter::Q4Block ours = converter::quantize_block_q4(v, converter::Q4Rule::least_squares);
    const converter::Q4Block q4_0 = converter::quantize_block_q4(v, converter::Q4Rule::llama_q4_0);
    for (uint8_t n : ours.nibbles) EXPECT_LE(n, 15);
    const double a = error(v, ours), c = error(v, q4_0);
    EXPECT_LE(a, c) << "block " << block;
    if (block == 3) {
      EXPECT_EQ(a, 0.0);
    }
    total_ours += a, total_q4_0 += c;
  }
  EXPECT_LT(total_ours, 0.9 * total_q4_0);
  const int rows = 8, cols = 1408;  // groups of 16, 16 and 12 blocks
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& x : w) x = normal(rng);
  const converter::Quantized ours = converter::quantize(w, rows, cols, DType::q4, 0, "w");
  const converter::Quantized q4_0 =
      converter::quantize(w, rows, cols, DType::q4, 0, "w", converter::Q4Rule::llama_q4_0);
  EXPECT_EQ(ours.group_size, 32);
  ASSERT_EQ(ours.data.size(), w.size() / 32 * 18);
  double e_ours = 0, e_q4_0 = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double a = converter::dequantized(ours, cols, static_cast<long>(i)) - w[i];
    const double c = converter::dequantized(q4_0, cols, static_cast<long>(i)) - w[i];
    EXPECT_LE(std::fabs(a), 0.02 * 8) << i;  // within the block's range
    e_ours += a * a, e_q4_0 += c * c;
  }
  EXPECT_LT(e_ours, e_q4_0);
  EXPECT_THROW((void)converter::quantize(std::vector<float>(48, 1.f), 1, 48, DType::q4, 0, "w48"), InputError);
}

// moe_convert shares each int8 and int4 tensor's rows among its threads: every split
// (3 threads in 12 parts over 37 rows: parts of 3 and 4 rows) gives the one-thread bytes.
TEST(Quantize, ThreadsGiveTheSameBytes) {
  platform::ThreadPool pool(3, 4);
  const Workers workers = pool.workers();
  ASSERT_GT(workers.threads, 1);
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.f, 0.02f);
  const int rows = 37, cols = 1408;  // int4 groups of 16, 16 and 12 blocks
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& x : w) x = normal(rng);
  for (const auto& [dtype, group] : {std::pair{DType::q4, 0}, {DType::i8, 0}, {DType::i8, 32}}) {
    const converter::Quantized one = converter::quantize(w, rows, cols, dtype, group, "w");
    const converter::Quantized shared =
        converter::quantize(w, rows, cols, dtype, group, "w", converter::Q4Rule::least_squares, workers);
    EXPECT_EQ(shared.data, one.data) << static_cast<int>(dtype) << " g" << group;
    EXPECT_EQ(shared.scales, one.scales) << static_cast<int>(dtype) << " g" << group;
  }
  converter::ConvertOptions options;
  const converter::Conversion one = converter::convert_checkpoint(test::fixture_dir("mixtral-tiny-a"), options);
  options.workers = workers;
  const converter::Conversion shared = converter::convert_checkpoint(test::fixture_dir("mixtral-tiny-a"), options);
  EXPECT_EQ(shared.bytes, one.bytes);
}

// int4 in the file: format version 5, streamed or in memory the same bytes; tensors
// whose columns are not whole blocks of 32 stored int8, with a note.
TEST(Converter, Int4ExpertsConvertStreamedAndInMemory) {
  converter::ConvertOptions options;
  options.recipe.experts = DType::q4;
  const converter::Conversion memory = converter::convert_checkpoint(test::fixture_dir("mixtral-tiny-a"), options);
  EXPECT_EQ(memory.format_version, 5u);
  options.stream_from_bytes = 0;
  test::TempDir tmp;
  const converter::Conversion streamed =
      converter::convert_to_file(test::fixture_dir("mixtral-tiny-a"), options, tmp / "s.moe");
  EXPECT_EQ(streamed.format_version, 5u);
  const std::string bytes = test::read_file(tmp / "s.moe");
  test::AlignedBuffer buf(bytes.data(), bytes.size());
  ModelFile s;
  ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), s).ok());
  Opened m(memory);
  for (int i = 0; i < tensor_count(s.config()); ++i) {
    const TensorBytes a = s.bytes(i), b = m.file.bytes(i);
    ASSERT_EQ(a.bytes, b.bytes) << i;
    EXPECT_EQ(std::memcmp(a.data, b.data, a.bytes), 0) << "tensor " << i;
    EXPECT_EQ(s.tensor(i).dtype(), m.file.tensor(i).dtype());
  }
  // OLMoE's fixture has 48-column down projections: those are stored int8, with a note.
  const converter::Conversion olmoe = converter::convert_checkpoint(test::fixture_dir("olmoe-tiny-a"), options);
  Opened o(olmoe);
  int q4 = 0, i8 = 0;
  for (int i = 0; i < tensor_count(o.file.config()); ++i) {
    const fb::Tensor& t = o.file.tensor(i);
    if (t.expert() < 0) continue;
    const bool whole_blocks = t.shape()->Get(1) % 32 == 0;
    EXPECT_EQ(t.dtype(), whole_blocks ? fb::DType_Q4 : fb::DType_I8) << i;
    (whole_blocks ? q4 : i8) += 1;
  }
  EXPECT_GT(q4, 0);
  EXPECT_GT(i8, 0);
  const std::string note =
      std::to_string(i8) + " tensor(s) have a column count not divisible by 32 (int4's blocks): they are stored int8";
  EXPECT_EQ(std::count(olmoe.notes.begin(), olmoe.notes.end(), note), 1) << olmoe.notes.size() << " notes";
}

// ---- crash-safe writes ---------------------------------------------------------------

TEST(AtomicWrite, FailedConversionKeepsTheOldFile) {
  test::TempDir tmp;
  const auto dest = tmp / "model.moe";
  converter::write_file_atomically(dest, std::string("old model"));
  EditableCheckpoint ck("mixtral-tiny-a");
  ck.remove("model.norm.weight");
  expect_refusal(ck.write(), "missing tensor 'model.norm.weight'");
  std::ifstream in(dest);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "old model");
  EXPECT_THROW(converter::write_file_atomically(tmp / "no-such-dir" / "m.moe", std::string("x")), InputError);
}

// Runs `write` in a child process whose files may not grow past `limit` bytes (writes
// then fail with EFBIG, as on a full disk); expects a clear failure that replaced
// nothing: the old file intact and no temporary file left beside it.
template <class Write>
void expect_full_disk_keeps_the_old_file(rlim_t limit, Write write) {
  test::TempDir tmp;
  const auto dest = tmp / "model.moe";
  converter::write_file_atomically(dest, std::string("old model"));
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{limit, limit};
    setrlimit(RLIMIT_FSIZE, &lim);
    try {
      write(dest);
    } catch (const InputError& e) {
      _exit(std::string(e.what()).find("nothing was replaced") != std::string::npos ? 42 : 1);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 42) << "the write should have failed with a clear message";
  EXPECT_EQ(test::read_file(dest), "old model");
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) (void)e, ++files;
  EXPECT_EQ(files, 1) << "a temporary file was left behind";
}

TEST(AtomicWrite, FullDiskLeavesOldFileAndNoTemp) {
  expect_full_disk_keeps_the_old_file(4096, [](const std::filesystem::path& dest) {
    const std::vector<char> big(100000, 'x');
    converter::write_file_atomically(dest, big.data(), big.size());
  });
}

// The streamed conversion (format 3) on a disk that fills part way: the tensors are
// written at offsets past the limit.
TEST(AtomicWrite, FullDiskDuringAStreamedConversion) {
  expect_full_disk_keeps_the_old_file(65536, [](const std::filesystem::path& dest) {  // the metadata fits
    converter::ConvertOptions options;
    options.stream_from_bytes = 0;
    (void)converter::convert_to_file(test::fixture_dir("mixtral-tiny-a"), options, dest);
  });
}

}  // namespace
}  // namespace moe
