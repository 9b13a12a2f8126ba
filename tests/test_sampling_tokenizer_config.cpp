// Sampling (greedy, temperature, top-k, top-p, seeded), the char tokenizer, and the
// config key that names a compiled model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "moe/config.hpp"
#include "moe/format.hpp"
#include "moe/model_layout.hpp"
#include "moe/sampler.hpp"
#include "moe/tokenizer.hpp"

namespace moe {
namespace {

// ---- sampler --------------------------------------------------------------------------

TEST(Pcg32, MatchesTheReferenceImplementation) {
  // pcg32-demo (pcg-random.org, pcg32_srandom(42, 54)) prints these first outputs.
  Pcg32 rng(42, 54);
  const uint32_t want[] = {0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e};
  for (uint32_t w : want) EXPECT_EQ(rng.next(), w);
}

std::vector<int> histogram(Sampler<4>& s, const float* logits, int draws) {
  std::vector<int> h(4, 0);
  for (int i = 0; i < draws; ++i) ++h[static_cast<size_t>(s.sample(logits))];
  return h;
}

const float kLogits[4] = {std::log(0.1f), std::log(0.2f), std::log(0.3f), std::log(0.4f)};

TEST(Sampler, GreedyIsArgmaxLowestIndexOnTies) {
  Sampler<4> s(SamplingParams{0.f, 0, 1.f, 1});
  EXPECT_EQ(s.sample(kLogits), 3);
  const float tied[4] = {1.f, 5.f, 5.f, NAN};
  EXPECT_EQ(s.sample(tied), 1);
  Sampler<4> k1(SamplingParams{1.f, 1, 1.f, 1});  // top-k 1 is greedy too
  EXPECT_EQ(k1.sample(kLogits), 3);
}

TEST(Sampler, TemperatureOneFollowsTheDistribution) {
  Sampler<4> s(SamplingParams{1.f, 0, 1.f, 7});
  const int n = 200000;
  const auto h = histogram(s, kLogits, n);
  const double want[4] = {0.1, 0.2, 0.3, 0.4};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(h[static_cast<size_t>(i)] / double(n), want[i], 0.005) << i;
}

TEST(Sampler, TemperatureSharpens) {
  Sampler<4> s(SamplingParams{0.5f, 0, 1.f, 7});  // p^2, renormalised: 1:4:9:16 / 30
  const int n = 200000;
  const auto h = histogram(s, kLogits, n);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(h[static_cast<size_t>(i)] / double(n), (i + 1) * (i + 1) / 30.0, 0.005) << i;
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  Sampler<4> s(SamplingParams{1.f, 2, 1.f, 7});
  const int n = 100000;
  const auto h = histogram(s, kLogits, n);
  EXPECT_EQ(h[0] + h[1], 0);
  EXPECT_NEAR(h[3] / double(n), 0.4 / 0.7, 0.01);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  Sampler<4> s(SamplingParams{1.f, 0, 0.5f, 7});  // 0.4 < 0.5, 0.4 + 0.3 >= 0.5: keep {3, 2}
  const int n = 100000;
  const auto h = histogram(s, kLogits, n);
  EXPECT_EQ(h[0] + h[1], 0);
  EXPECT_NEAR(h[3] / double(n), 0.4 / 0.7, 0.01);
  Sampler<4> tiny(SamplingParams{1.f, 0, 0.01f, 7});  // only the most likely token
  EXPECT_EQ(histogram(tiny, kLogits, 1000)[3], 1000);
}

// Top-p as the words say: every token sorted most likely first (ties by id), the shortest
// prefix whose probability reaches p of the whole, a draw from it. The sampler finds the
// prefix without sorting the vocabulary; with the same generator it must draw the same ids.
template <int V>
std::vector<int32_t> top_p_by_full_sort(std::vector<float> logits, float temperature, float top_p, uint64_t seed,
                                        int draws) {
  const float inv_t = 1.f / temperature;  // as the sampler scales
  for (float& l : logits) l *= inv_t;
  kernels::softmax(kernels::Scalar{}, logits.data(), V);
  std::vector<int32_t> order(V);
  for (int i = 0; i < V; ++i) order[static_cast<size_t>(i)] = i;
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
           (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
  });
  float mass = 0.f;
  for (float p : logits) mass += p;
  size_t n = order.size();
  float cumulative = 0.f;
  for (size_t i = 0; i < order.size(); ++i) {
    cumulative += logits[static_cast<size_t>(order[i])];
    if (cumulative >= top_p * mass) {
      n = i + 1;
      break;
    }
  }
  float kept = 0.f;
  for (size_t i = 0; i < n; ++i) kept += logits[static_cast<size_t>(order[i])];
  Pcg32 rng(seed);
  std::vector<int32_t> ids;
  for (int d = 0; d < draws; ++d) {
    const float r = rng.uniform() * kept;
    float c = 0.f;
    int32_t id = order[n - 1];
    for (size_t i = 0; i < n; ++i) {
      c += logits[static_cast<size_t>(order[i])];
      if (r < c) {
        id = order[i];
        break;
      }
    }
    ids.push_back(id);
  }
  return ids;
}

TEST(Sampler, TopPDrawsWhatAFullSortDraws) {
  constexpr int V = 20000;  // its nucleus takes from 1 to all of the 4 sizes the sampler tries
  auto sampler_ids = [](const std::vector<float>& logits, float t, float p, uint64_t seed, int draws) {
    auto s = std::make_unique<Sampler<V>>(SamplingParams{t, 0, p, seed});
    std::vector<int32_t> ids;
    for (int d = 0; d < draws; ++d) ids.push_back(s->sample(logits.data()));
    return ids;
  };
  Pcg32 rng(99);
  auto normal = [&] {  // Box-Muller
    const float u = (static_cast<float>(rng.next() >> 8) + 0.5f) / 16777216.f, v = rng.uniform();
    return std::sqrt(-2.f * std::log(u)) * std::cos(6.2831853f * v);
  };
  // Logit spreads from flat (the nucleus is most of the vocabulary) to peaked (a handful),
  // and a distribution of ties, so the prefix ends inside a run of equal probabilities.
  for (const float spread : {0.05f, 1.f, 3.f, 6.f, 12.f}) {
    std::vector<float> logits(V);
    for (float& l : logits) l = spread * normal();
    for (const float p : {0.1f, 0.5f, 0.9f, 0.95f, 0.999f}) {
      SCOPED_TRACE(testing::Message() << "spread " << spread << " top-p " << p);
      EXPECT_EQ(sampler_ids(logits, 0.8f, p, 5, 60), top_p_by_full_sort<V>(logits, 0.8f, p, 5, 60));
    }
  }
  std::vector<float> ties(V);
  for (int i = 0; i < V; ++i) ties[static_cast<size_t>(i)] = static_cast<float>(i % 7 == 0 ? 3 : i % 5);
  for (const float p : {0.3f, 0.95f}) EXPECT_EQ(sampler_ids(ties, 1.f, p, 9, 60), top_p_by_full_sort<V>(ties, 1.f, p, 9, 60));
}

TEST(Sampler, SameSeedSameSequenceOtherSeedOther) {
  Sampler<4> a(SamplingParams{1.f, 0, 0.9f, 123}), b(SamplingParams{1.f, 0, 0.9f, 123}),
      c(SamplingParams{1.f, 0, 0.9f, 124});
  std::vector<int> sa, sb, sc;
  for (int i = 0; i < 200; ++i) {
    sa.push_back(a.sample(kLogits));
    sb.push_back(b.sample(kLogits));
    sc.push_back(c.sample(kLogits));
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

TEST(Sampler, ParameterChecks) {
  EXPECT_TRUE(SamplingParams{}.check().ok());
  EXPECT_NE(std::string(SamplingParams{-1.f, 0, 1.f, 1}.check().what()).find("temperature"), std::string::npos);
  EXPECT_NE(std::string(SamplingParams{1.f, -2, 1.f, 1}.check().what()).find("top-k"), std::string::npos);
  EXPECT_NE(std::string(SamplingParams{1.f, 0, 0.f, 1}.check().what()).find("top-p"), std::string::npos);
  EXPECT_NE(std::string(SamplingParams{1.f, 0, 1.5f, 1}.check().what()).find("top-p"), std::string::npos);
}

// ---- tokenizer --------------------------------------------------------------------------

TEST(Utf8, RoundTripAndRejections) {
  for (uint32_t cp : {0x41u, 0x7fu, 0x80u, 0xe9u, 0x7ffu, 0x800u, 0x20acu, 0xffffu, 0x10000u, 0x1f600u, 0x10ffffu}) {
    char buf[4];
    const int n = utf8_encode(cp, buf);
    uint32_t back = 0;
    EXPECT_EQ(utf8_decode(buf, static_cast<size_t>(n), back), n);
    EXPECT_EQ(back, cp);
  }
  uint32_t cp = 0;
  EXPECT_EQ(utf8_decode("\xc0\xaf", 2, cp), 0);          // overlong '/'
  EXPECT_EQ(utf8_decode("\xed\xa0\x80", 3, cp), 0);      // surrogate
  EXPECT_EQ(utf8_decode("\xe2\x82", 2, cp), 0);          // truncated
  EXPECT_EQ(utf8_decode("\x80", 1, cp), 0);              // stray continuation
  EXPECT_EQ(utf8_decode("\xf4\x90\x80\x80", 4, cp), 0);  // above U+10FFFF
}

TEST(CharTokenizer, EncodesDecodesAndNamesUnknownCharacters) {
  const uint32_t chars[] = {'\n', ' ', 'E', 'M', 'O', 'R', ':', 0xe9};  // é is in this vocabulary
  const CharTokenizer tok(chars, 8);
  int32_t ids[16];
  int n = 0;
  ASSERT_TRUE(tok.encode("ROMEO: \xc3\xa9\n", 10, ids, 16, n).ok());
  EXPECT_EQ(std::vector<int32_t>(ids, ids + n), (std::vector<int32_t>{5, 4, 3, 2, 4, 6, 1, 7, 0}));
  std::string back;
  for (int i = 0; i < n; ++i) {
    char buf[4];
    back.append(buf, static_cast<size_t>(tok.decode(ids[i], buf)));
  }
  EXPECT_EQ(back, "ROMEO: \xc3\xa9\n");
  const Error unknown = tok.encode("ROMEO: \xe2\x82\xac", 10, ids, 16, n);
  EXPECT_EQ(unknown.code, ErrorCode::unknown_character);
  EXPECT_STREQ(unknown.what(),
               "prompt character '\xe2\x82\xac' (U+20AC) at byte 7 is not in the model's vocabulary of 8 characters");
  EXPECT_NE(std::string(tok.encode("R\tO", 3, ids, 16, n).what()).find("'?' (U+0009) at byte 1"), std::string::npos);
  EXPECT_NE(std::string(tok.encode("RO\xff", 3, ids, 16, n).what()).find("not valid UTF-8 at byte 2"),
            std::string::npos);
  EXPECT_NE(std::string(tok.encode("ROMEO", 5, ids, 3, n).what()).find("longer than 3 tokens"), std::string::npos);
  char buf[4];
  EXPECT_EQ(tok.decode(8, buf), 0);
  EXPECT_EQ(tok.decode(-1, buf), 0);
}

// ---- the engine's formatter (no libc printf: it would allocate on a microcontroller) -----

TEST(Format, MatchesSnprintfOnWhatTheEngineUses) {
  char got[128], want[128];
  auto same = [&](int a, int b) {
    EXPECT_EQ(a, b);
    EXPECT_STREQ(got, want);
  };
  same(format(got, sizeof got, "%s-d%d-l%u %lu %x %X %02x %04X %08x %c %%", "llama", -42, 7u, 123456789ul, 0xbeefu,
              0xbeefu, 5u, 10u, 0xdeadbeefu, 'z'),
       std::snprintf(want, sizeof want, "%s-d%d-l%u %lu %x %X %02x %04X %08x %c %%", "llama", -42, 7u, 123456789ul,
                     0xbeefu, 0xbeefu, 5u, 10u, 0xdeadbeefu, 'z'));
  for (double v : {0.0, 1.0, -1.0, 0.5, 1e-5, 1.5e-4, 0.001, 3.14159265, 100.0, 99999.9, 123456.0, 1234567.0, 1e10,
                   6.02e23, -2.5e-7, 10000.0, 1e6, 0.1, 2.9032})
    same(format(got, sizeof got, "%g", v), std::snprintf(want, sizeof want, "%g", v));
  same(format(got, sizeof got, "%g %g", NAN, -INFINITY), std::snprintf(want, sizeof want, "%g %g", NAN, -INFINITY));
  // Truncation keeps a terminator and reports the full length, as snprintf.
  const char* long_text = "truncated";
  EXPECT_EQ(format(got, 5, "%s", long_text), 9);
  EXPECT_STREQ(got, "trun");
}

// ---- config keys ------------------------------------------------------------------------

TEST(ConfigKey, ParsesFormatsAndRoundTrips) {
  constexpr ModelConfig c = config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
  static_assert(c.family == Family::llama && c.d_model == 64 && c.n_layers == 2 && c.n_heads == 4 &&
                c.n_kv_heads == 2 && c.head_dim == 16 && c.n_experts == 4 && c.top_k == 2 && c.expert_hidden == 128 &&
                c.vocab_size == 96 && c.max_context == 128);
  EXPECT_STREQ(ConfigKey(c).c_str(), "llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
  ModelConfig back{};
  EXPECT_TRUE(try_parse_config_key(ConfigKey(c).c_str(), back));
  EXPECT_EQ(back, c);
  for (const char* bad :
       {"", "llama", "mixtral-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128", "llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96",
        "llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128x", "llama-d-l2-h4-kv2-hd16-e4-k2-f128-v96-c128",
        "llama-d64-h4-l2-kv2-hd16-e4-k2-f128-v96-c128", "llama-d99999999999-l2-h4-kv2-hd16-e4-k2-f128-v96-c128"})
    EXPECT_FALSE(try_parse_config_key(bad, back)) << bad;
}

TEST(ConfigKey, ProblemsAreNamed) {
  ModelConfig c = config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
  EXPECT_EQ(config_problem(c), nullptr);
  c.n_kv_heads = 3;
  EXPECT_STREQ(config_problem(c), "n_heads must be a multiple of n_kv_heads");
  c = config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");
  c.n_kv_heads = 2;
  EXPECT_NE(std::string(config_problem(c)).find("multi-head attention"), std::string::npos);
  c.n_kv_heads = 4;
  c.top_k = 0;
  EXPECT_STREQ(config_problem(c), "every dimension must be positive");
  // Found by fuzz_model_file: heads x head_dim overflowed int before any check.
  c = config_from_key("llama-d8-l2-h2-kv1-hd4-e3-k2-f16-v16-c8");
  c.head_dim = 1073741828;
  EXPECT_STREQ(config_problem(c), "a dimension is implausibly large");
  c.head_dim = 4096;
  c.n_heads = 2048;
  c.n_kv_heads = 2048;
  EXPECT_STREQ(config_problem(c), "a dimension is implausibly large");
}

TEST(ModelLayout, TensorCountsAndParameters) {
  // mixtral-tiny-a: embed, 2 x (2 norms + 4 attn + router + 4 x 3 experts), norm, lm_head
  constexpr ModelConfig mix = config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
  EXPECT_EQ(tensor_count(mix), 1 + 2 * (2 + 4 + 1 + 12) + 2);
  // makemoe-tiny: 2 embeddings, 2 x (4 norm + 4 attn + wo bias + router + bias + 4 x 4 experts), 2 final, 2 head
  constexpr ModelConfig mk = config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");
  EXPECT_EQ(tensor_count(mk), 2 + 2 * (4 + 4 + 1 + 2 + 16) + 2 + 2);
  // Parameters counted independently from the safetensors shapes of the fixtures.
  EXPECT_EQ(total_params(mix), 96 * 64 * 2 + 64 + 2 * (2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 4 * 64 + 4 * 3 * 128 * 64));
  // Active: all but the embedding table, and 2 of 4 experts per layer.
  EXPECT_EQ(active_params_per_token(mix),
            96 * 64 + 64 + 2 * (2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 4 * 64 + 2 * 3 * 128 * 64));
}

}  // namespace
}  // namespace moe
