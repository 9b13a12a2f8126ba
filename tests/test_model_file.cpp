// Bad .moe input: truncated, padded, wrong identifier, future version, a changed
// dimension, bad int8 scales, lengths that disagree, offsets out of the buffer, random
// bit flips, the wrong compiled config. Each gives a clear error naming the problem —
// never a crash (this suite also runs under ASan/UBSan), never a load that yields NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "moe/engine.hpp"
#include "support/test_support.hpp"

namespace moe {
namespace {

constexpr ModelConfig kMixtral = config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
constexpr ModelConfig kMakemoe = config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");

class ModelFileTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // int8 experts (with f32 scales), f16 attention and embeddings: the surgery below edits them.
    converter::ConvertOptions o;
    o.recipe = test::recipe(DType::i8, DType::f16, DType::f16);
    good_ = new std::vector<uint8_t>(converter::convert_checkpoint(test::fixture_dir("mixtral-tiny-a"), o).bytes);
  }
  static void TearDownTestSuite() { delete good_; }

  // A writable, aligned copy of the good file and its parsed root, for surgery.
  struct Copy {
    test::AlignedBuffer buf;
    fb::Model* model;
    explicit Copy(const std::vector<uint8_t>& bytes)
        : buf(bytes), model(const_cast<fb::Model*>(fb::GetSizePrefixedModel(buf.data()))) {}
    // Generated tables derive privately from flatbuffers::Table, at the same address.
    template <class T, class Table>
    T* field(const Table* table, flatbuffers::voffset_t vt) {
      auto* p = const_cast<uint8_t*>(reinterpret_cast<const flatbuffers::Table*>(table)->GetAddressOf(vt));
      EXPECT_NE(p, nullptr) << "field not stored";
      return reinterpret_cast<T*>(p);
    }
    fb::Tensor* tensor(int i) {
      return const_cast<fb::Tensor*>(model->tensors()->Get(static_cast<flatbuffers::uoffset_t>(i)));
    }
  };

  static Error open(const test::AlignedBuffer& b) {
    ModelFile f;
    return ModelFile::open(b.data(), b.size(), f);
  }
  static Error open_bytes(const void* data, size_t n) {
    test::AlignedBuffer b(data, n);
    ModelFile f;
    return ModelFile::open(b.data(), n, f);
  }
  static void expect_error(const Error& e, ErrorCode code, const std::string& text) {
    EXPECT_EQ(e.code, code) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << "message: " << e.what();
  }
  static std::vector<uint8_t>* good_;
};
std::vector<uint8_t>* ModelFileTest::good_ = nullptr;

TEST_F(ModelFileTest, GoodFileOpens) {
  test::AlignedBuffer b(*good_);
  ModelFile f;
  const Error e = ModelFile::open(b.data(), b.size(), f);
  ASSERT_TRUE(e.ok()) << e.what();
  EXPECT_EQ(f.config(), kMixtral);
  EXPECT_FALSE(f.tokenizer().present());
  EXPECT_EQ(std::string(f.model().provenance()->source_format()->c_str()), "hf-mixtral");
}

TEST_F(ModelFileTest, TruncatedAnywhere) {
  const size_t n = good_->size();
  std::vector<size_t> cuts = {0, 1, 4, 8, 11, 12, 13, 64, n / 2, n - 64, n - 1};
  for (size_t c = 100; c < n; c += n / 61) cuts.push_back(c);
  for (size_t cut : cuts) {
    SCOPED_TRACE(::testing::Message() << "cut at " << cut << " of " << n);
    const Error e = open_bytes(good_->data(), cut);
    ASSERT_FALSE(e.ok());
    if (cut < 12) expect_error(e, ErrorCode::not_a_model, "too small");
    else expect_error(e, ErrorCode::corrupt, "truncated");
  }
}

TEST_F(ModelFileTest, TrailingBytes) {
  std::vector<uint8_t> longer = *good_;
  longer.resize(longer.size() + 100, 0);
  expect_error(open_bytes(longer.data(), longer.size()), ErrorCode::corrupt, "100 bytes after its end");
}

TEST_F(ModelFileTest, WrongIdentifier) {
  std::vector<uint8_t> bytes = *good_;
  std::memset(bytes.data() + 8, 0, 4);
  expect_error(open_bytes(bytes.data(), bytes.size()), ErrorCode::not_a_model,
               "identifier is '....' (00 00 00 00), expected 'MOE1'");
  const char text[] = "{\"model_type\": \"mixtral\", \"hidden_size\": 64}";
  expect_error(open_bytes(text, sizeof text), ErrorCode::not_a_model, "not a .moe file");
}

TEST_F(ModelFileTest, FutureFormatVersion) {
  Copy c(*good_);
  *c.field<uint32_t>(c.model, fb::Model::VT_FORMAT_VERSION) = kFormatVersion + 1;
  expect_error(open(c.buf), ErrorCode::unsupported_version,
               "format version " + std::to_string(kFormatVersion + 1) + ", this engine reads versions 1 to " +
                   std::to_string(kFormatVersion));
}

TEST_F(ModelFileTest, ChangedDimensionNamesTheTensor) {
  Copy c(*good_);
  *c.field<uint32_t>(c.model->config(), fb::Config::VT_D_MODEL) = 65;
  expect_error(open(c.buf), ErrorCode::bad_tensor, "has shape [96, 64], the config needs [96, 65]");
  Copy k(*good_);
  *k.field<uint32_t>(k.model->config(), fb::Config::VT_TOP_K) = 9;
  expect_error(open(k.buf), ErrorCode::corrupt, "top_k must be at most n_experts");
}

TEST_F(ModelFileTest, BadInt8Scales) {
  // Tensor index of the first expert matrix in the canonical layout.
  int first_expert = -1, i = 0;
  for_each_tensor_spec(kMixtral, [&](const TensorSpec& s) {
    if (first_expert < 0 && s.role == TensorRole::expert_w1) first_expert = i;
    ++i;
  });
  for (float bad : {NAN, INFINITY, 0.f, -1.f}) {
    Copy c(*good_);
    fb::Tensor* t = c.tensor(first_expert);
    ASSERT_EQ(t->dtype(), fb::DType_I8);
    auto* scales = const_cast<float*>(t->scales()->data());
    scales[5] = bad;
    SCOPED_TRACE(bad);
    expect_error(open(c.buf), ErrorCode::bad_tensor, "scales must be finite and > 0");
  }
}

// A NaN or Inf written into a file whose checksum was then fixed (an edited file) is
// refused by the same pass that checks the CRC; an int8 scale that would overflow a
// row's sum is refused too; and an engine given such weights unverified reports the
// non-finite logits instead of sampling from them.
TEST_F(ModelFileTest, NonFiniteWeightsUnderACorrectChecksumAreRefused) {
  const auto refresh_crc = [](Copy& c, fb::Tensor* t) {
    uint32_t crc = crc32c(t->data()->data(), t->data()->size());
    if (t->scales() != nullptr) crc = crc32c_update(crc, t->scales()->data(), t->scales()->size() * sizeof(float));
    *c.field<uint32_t>(t, fb::Tensor::VT_CRC32C) = crc;
  };
  int norm = -1, i = 0, first_expert = -1;
  for_each_tensor_spec(kMixtral, [&](const TensorSpec& spec) {
    if (norm < 0 && spec.role == TensorRole::attn_norm) norm = i;
    if (first_expert < 0 && spec.role == TensorRole::expert_w1) first_expert = i;
    ++i;
  });
  {
    Copy c(*good_);
    fb::Tensor* t = c.tensor(norm);
    ASSERT_EQ(t->dtype(), fb::DType_F32);
    reinterpret_cast<float*>(const_cast<uint8_t*>(t->data()->data()))[3] = NAN;
    refresh_crc(c, t);
    expect_error(open(c.buf), ErrorCode::bad_tensor, "holds a NaN or infinite value at element 3");
  }
  {
    Copy c(*good_);
    fb::Tensor* t = c.tensor(0);  // token embedding, f16
    ASSERT_EQ(t->dtype(), fb::DType_F16);
    uint8_t* h = const_cast<uint8_t*>(t->data()->data()) + 2 * 130;  // row 2, column 2 of 64
    h[0] = 0x00, h[1] = 0x7c;                                        // +Inf
    refresh_crc(c, t);
    expect_error(open(c.buf), ErrorCode::bad_tensor, "holds a NaN or infinite value at element 130 (row 2)");
  }
  {
    Copy c(*good_);
    fb::Tensor* t = c.tensor(first_expert);
    const_cast<float*>(t->scales()->data())[0] = 1e38f;
    refresh_crc(c, t);
    expect_error(open(c.buf), ErrorCode::bad_tensor, "scales must be finite and > 0, at most");
  }
  {
    Copy c(*good_);
    fb::Tensor* head = c.tensor(tensor_count(kMixtral) - 1);  // lm_head
    ASSERT_EQ(head->dtype(), fb::DType_F16);
    for (int k = 0; k < 64; ++k) const_cast<uint8_t*>(head->data()->data())[2 * k + 1] = 0x7c;  // row 0: Inf
    ModelFile f;
    ASSERT_TRUE(ModelFile::open(c.buf.data(), c.buf.size(), f, OpenOptions{.verify_checksums = false}).ok());
    auto engine = std::make_unique<Engine<kMixtral>>();
    ASSERT_TRUE(engine->load(f).ok());
    const int32_t ids[] = {5, 6};
    expect_error(engine->prefill(ids, 2), ErrorCode::non_finite, "non-finite logit");
    EXPECT_EQ(engine->position(), 0);
  }
}

// A q4 file: version 5, its expert tensors' blocks sized by the shape, group size 32,
// no int8 scales, every block scale finite (under a correct checksum), and refused in
// a file whose version predates q4.
TEST_F(ModelFileTest, BadInt4Tensors) {
  converter::ConvertOptions o;
  o.recipe.experts = DType::q4;
  const std::vector<uint8_t> q4 = converter::convert_checkpoint(test::fixture_dir("mixtral-tiny-a"), o).bytes;
  int first_expert = -1, i = 0;
  for_each_tensor_spec(kMixtral, [&](const TensorSpec& s) {
    if (first_expert < 0 && s.role == TensorRole::expert_w1) first_expert = i;
    ++i;
  });
  {
    Copy c(q4);
    EXPECT_EQ(c.model->format_version(), 5u);
    const fb::Tensor* t = c.tensor(first_expert);
    ASSERT_EQ(t->dtype(), fb::DType_Q4);
    EXPECT_EQ(t->data()->size(), 128u * 64 / 32 * 18);  // [128, 64]: 18 bytes per block of 32
    EXPECT_TRUE(open(c.buf).ok());
  }
  {
    Copy c(q4);
    *c.field<uint32_t>(c.tensor(first_expert), fb::Tensor::VT_GROUP_SIZE) = 64;
    expect_error(open(c.buf), ErrorCode::corrupt, "q4 needs groups of 32");
  }
  {
    Copy c(q4);
    *c.field<uint32_t>(c.model, fb::Model::VT_FORMAT_VERSION) = 4;
    expect_error(open(c.buf), ErrorCode::corrupt, "q4 needs version 5");
  }
  {
    Copy c(q4);
    fb::Tensor* t = c.tensor(first_expert);
    // [128, 64]: a row is one group of 2 blocks, 36 bytes (2 scales, then nibbles). Row 1,
    // block 1's scale: its first column is 4 (the block's columns are 4..7 of each chunk).
    uint8_t* scale = const_cast<uint8_t*>(t->data()->data()) + 36 + 2;
    scale[0] = 0x00, scale[1] = 0x7c;  // +Inf
    *c.field<uint32_t>(t, fb::Tensor::VT_CRC32C) = crc32c(t->data()->data(), t->data()->size());
    expect_error(open(c.buf), ErrorCode::bad_tensor, "NaN or infinite q4 scale for the block at element 68 (row 1)");
  }
  {
    Copy c(q4);
    uint8_t* block = const_cast<uint8_t*>(c.tensor(first_expert)->data()->data());
    block[7] ^= 0x10;  // one nibble
    expect_error(open(c.buf), ErrorCode::corrupt, "fails its checksum");
  }
}

TEST_F(ModelFileTest, LengthThatDisagreesWithTheShape) {
  Copy c(*good_);
  fb::Tensor* t = c.tensor(0);  // token embedding, f16 [96, 64]
  // The uint32 length prefix sits just before a vector's data.
  auto* len = reinterpret_cast<uint32_t*>(const_cast<uint8_t*>(t->data()->data()) - 4);
  *len -= 2;
  expect_error(open(c.buf), ErrorCode::corrupt, "holds 12286 bytes, its shape and dtype need 12288");
}

TEST_F(ModelFileTest, OffsetOutsideTheBuffer) {
  Copy c(*good_);
  // The root table's offset to its tensors vector: point it far past the end.
  *c.field<uint32_t>(c.model, fb::Model::VT_TENSORS) += static_cast<uint32_t>(c.buf.size());
  expect_error(open(c.buf), ErrorCode::corrupt, "does not verify");
}

TEST_F(ModelFileTest, PayloadCorruptionFailsTheChecksum) {
  Copy c(*good_);
  fb::Tensor* t = c.tensor(10);
  const_cast<uint8_t*>(t->data()->data())[7] ^= 0x10;
  expect_error(open(c.buf), ErrorCode::corrupt, "fails its checksum");
  EXPECT_TRUE(std::string(open(c.buf).what()).find(t->name()->c_str()) != std::string::npos);
}

// Every input the fuzzers found crashing (tests/fuzz_regressions/) now opens to a clear
// error, without a sanitizer report (this suite also runs under ASan/UBSan).
TEST_F(ModelFileTest, FuzzerFindingsAreRefusedCleanly) {
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(test::source_dir() / "tests" / "fuzz_regressions")) {
    if (e.path().extension() != ".moe") continue;
    ++files;
    const std::string bytes = test::read_file(e.path());
    const Error err = open_bytes(bytes.data(), bytes.size());
    EXPECT_FALSE(err.ok()) << e.path();
    EXPECT_GT(std::strlen(err.what()), 10u) << e.path();
    SCOPED_TRACE(e.path().string() + ": " + err.what());
  }
  EXPECT_GE(files, 1);
}

TEST_F(ModelFileTest, RandomBitFlipsNeverCrashOrYieldNaN) {
  std::mt19937 rng(12345);
  int refused = 0, loaded = 0;
  for (int trial = 0; trial < 300; ++trial) {
    Copy c(*good_);
    const size_t byte = 12 + rng() % (c.buf.size() - 12);
    c.buf.data()[byte] ^= static_cast<uint8_t>(1u << (rng() % 8));
    ModelFile f;
    if (ModelFile::open(c.buf.data(), c.buf.size(), f)) {
      ++refused;
      continue;
    }
    // A flip the checks cannot see (a name, padding, a metadata value that is still
    // valid) must still give a working model.
    ++loaded;
    auto engine = std::make_unique<Engine<kMixtral>>();
    if (engine->load(f)) continue;  // e.g. a dimension changed into another valid config
    const int32_t ids[] = {1, 2, 3, 4};
    ASSERT_TRUE(engine->prefill(ids, 4).ok());
    for (int v = 0; v < kMixtral.vocab_size; ++v)
      ASSERT_TRUE(std::isfinite(engine->logits()[v])) << "flip at byte " << byte;
  }
  std::printf("  300 random bit flips: %d refused at load, %d loaded (in names, padding or still-valid metadata)\n",
              refused, loaded);
  EXPECT_GT(refused, 250);  // the weights are nearly all of the file, and every weight byte is checksummed
}

TEST_F(ModelFileTest, MisalignedBufferIsRefused) {
  std::vector<uint8_t> shifted(good_->size() + 64 + 1);
  auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(shifted.data()) + 63) / 64 * 64) + 1;
  std::memcpy(base, good_->data(), good_->size());
  ModelFile f;
  expect_error(ModelFile::open(base, good_->size(), f), ErrorCode::io, "not 64-byte aligned");
}

TEST_F(ModelFileTest, EngineRefusesAnotherConfigNamingBoth) {
  test::AlignedBuffer b(*good_);
  ModelFile f;
  ASSERT_TRUE(ModelFile::open(b.data(), b.size(), f).ok());
  auto engine = std::make_unique<Engine<kMakemoe>>();
  expect_error(engine->load(f), ErrorCode::config_mismatch,
               "model config llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128 does not match this engine's compiled config "
               "classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");
  EXPECT_FALSE(engine->loaded());
  const int32_t id = 0;
  expect_error(engine->prefill(&id, 1), ErrorCode::io, "no model loaded");
}

// Found by fuzz_model_file: a huge expert capacity factor overflowed int in the
// capacity computation. Any factor >= E/k admits every routed choice, so a factor of
// 1e300 must compute exactly what no capacity rule computes.
TEST_F(ModelFileTest, HugeCapacityFactorMeansNoCapacityLimit) {
  std::vector<float> logits[2];
  const double factors[2] = {1e300, 0.};
  for (int i = 0; i < 2; ++i) {
    converter::ConvertOptions options;
    options.capacity_factor = factors[i];
    const test::AlignedBuffer b(converter::convert_checkpoint(test::fixture_dir("makemoe-tiny"), options).bytes);
    ModelFile f;
    ASSERT_TRUE(ModelFile::open(b.data(), b.size(), f).ok());
    auto engine = std::make_unique<Engine<kMakemoe>>();
    ASSERT_TRUE(engine->load(f).ok());
    const int32_t prompt[] = {30, 27, 25, 17, 27, 10};
    ASSERT_TRUE(engine->prefill(prompt, 6).ok());
    logits[i].assign(engine->logits(), engine->logits() + kMakemoe.vocab_size);
  }
  EXPECT_EQ(logits[0], logits[1]);
}

TEST_F(ModelFileTest, EngineRejectsBadTokensAndKeepsItsState) {
  test::AlignedBuffer b(*good_);
  ModelFile f;
  ASSERT_TRUE(ModelFile::open(b.data(), b.size(), f).ok());
  auto engine = std::make_unique<Engine<kMixtral>>();
  ASSERT_TRUE(engine->load(f).ok());
  const int32_t ok_ids[] = {5, 6};
  ASSERT_TRUE(engine->prefill(ok_ids, 2).ok());
  std::vector<float> before(engine->logits(), engine->logits() + kMixtral.vocab_size);
  const int32_t bad[] = {7, 96};
  expect_error(engine->prefill(bad, 2), ErrorCode::bad_token,
               "token id 96 at index 1 is outside the vocabulary [0, 96)");
  EXPECT_EQ(engine->position(), 2);
  EXPECT_EQ(std::vector<float>(engine->logits(), engine->logits() + kMixtral.vocab_size), before);
  // llama family: a full context stops with a clear status and changes nothing.
  std::vector<int32_t> many(static_cast<size_t>(kMixtral.max_context - 2), 3);
  ASSERT_TRUE(engine->prefill(many.data(), static_cast<int>(many.size())).ok());
  EXPECT_EQ(engine->position(), kMixtral.max_context);
  expect_error(engine->decode(4), ErrorCode::context_full, "exceed max_context 128");
  EXPECT_EQ(engine->position(), kMixtral.max_context);
}

}  // namespace
}  // namespace moe
