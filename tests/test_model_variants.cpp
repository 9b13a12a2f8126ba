// The engine on configs the fixtures do not cover: top-1 (Switch), dense soft gating
// (k = E), multi-query attention, an explicit head_dim, other expert capacities —
// against a naive double-precision forward written here from the reference
// definitions (HF Mixtral: softmax over all E router logits, keep top-k, renormalise;
// makeMoE: softmax over the top-k logits, capacity int(T*k/E*factor) first come).
// Random checkpoints go through the real converter.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "converter/atomic_file.hpp"
#include "converter/safetensors.hpp"
#include "moe/engine.hpp"
#include "support/test_support.hpp"

namespace moe {
namespace {

using Mat = std::vector<double>;  // row-major
using Tensors = std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>;

struct RandomCheckpoint {
  test::TempDir dir;
  Tensors t;
  std::mt19937 rng{99};
  void add(const std::string& name, std::vector<int64_t> shape, float scale = 0.15f, float mean = 0.f) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::normal_distribution<float> dist(mean, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = dist(rng);
    t[name] = {shape, v};
  }
  const std::vector<float>& w(const std::string& name) const { return t.at(name).second; }
  void write(const nlohmann::json& config, const std::string& tokenizer = "") {
    std::vector<converter::SafetensorOut> out;
    for (auto& [name, sv] : t) out.push_back(converter::f32_tensor(name, sv.first, sv.second.data()));
    converter::write_safetensors(dir / "model.safetensors", out);
    converter::write_file_atomically(dir / "config.json", config.dump());
    if (!tokenizer.empty()) converter::write_file_atomically(dir / "tokenizer.json", tokenizer);
  }
};

// y = W x (+ b), W [rows, cols] row-major.
std::vector<double> matvec(const std::vector<float>& w, const std::vector<double>& x, int rows,
                           const std::vector<float>* b = nullptr) {
  const int cols = static_cast<int>(x.size());
  std::vector<double> y(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    double s = b ? (*b)[static_cast<size_t>(r)] : 0.0;
    for (int c = 0; c < cols; ++c)
      s += static_cast<double>(w[static_cast<size_t>(r * cols + c)]) * x[static_cast<size_t>(c)];
    y[static_cast<size_t>(r)] = s;
  }
  return y;
}

std::vector<double> softmax(std::vector<double> v) {
  const double m = *std::max_element(v.begin(), v.end());
  double z = 0;
  for (auto& x : v) z += (x = std::exp(x - m));
  for (auto& x : v) x /= z;
  return v;
}

// Every row of the engine's logits within 1e-4 x max|reference| of the naive forward.
void expect_rows_close(const std::vector<float>& got, const std::vector<std::vector<double>>& want, int vocab,
                       const char* label) {
  for (size_t t = 0; t < want.size(); ++t) {
    double max_ref = 0, max_diff = 0;
    for (int i = 0; i < vocab; ++i) {
      const double w = want[t][static_cast<size_t>(i)];
      max_ref = std::max(max_ref, std::fabs(w));
      max_diff = std::max(max_diff, std::fabs(got[t * static_cast<size_t>(vocab) + static_cast<size_t>(i)] - w));
    }
    EXPECT_LT(max_diff / max_ref, 1e-4) << label << ", position " << t;
  }
}

std::vector<int> topk_indices(const std::vector<double>& v, int k) {
  std::vector<int> idx(v.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int>(i);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int a, int b) { return v[static_cast<size_t>(a)] > v[static_cast<size_t>(b)]; });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

// ---- llama family, as transformers' MixtralForCausalLM computes it ----------------------
struct LlamaDims {
  int d, layers, heads, kv, hd, experts, k, ffn, vocab, ctx;
};

std::vector<std::vector<double>> naive_mixtral(const RandomCheckpoint& ck, const LlamaDims& m,
                                               const std::vector<int32_t>& ids) {
  const int T = static_cast<int>(ids.size());
  auto rms = [&](const std::vector<double>& x, const std::vector<float>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1 / std::sqrt(ss / m.d + 1e-5);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  };
  auto rope = [&](std::vector<double>& v, int n_heads, int pos) {
    for (int h = 0; h < n_heads; ++h)
      for (int i = 0; i < m.hd / 2; ++i) {
        const double ang = pos * std::pow(10000.0, -2.0 * i / m.hd);
        double& a = v[static_cast<size_t>(h * m.hd + i)];
        double& b = v[static_cast<size_t>(h * m.hd + i + m.hd / 2)];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(ang) - b0 * std::sin(ang);
        b = b0 * std::cos(ang) + a0 * std::sin(ang);
      }
  };
  std::vector<std::vector<double>> x(static_cast<size_t>(T));
  const auto& emb = ck.w("model.embed_tokens.weight");
  for (int t = 0; t < T; ++t)
    x[static_cast<size_t>(t)].assign(emb.begin() + ids[static_cast<size_t>(t)] * m.d,
                                     emb.begin() + (ids[static_cast<size_t>(t)] + 1) * m.d);
  for (int l = 0; l < m.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<std::vector<double>> q(static_cast<size_t>(T)), k(static_cast<size_t>(T)), v(static_cast<size_t>(T));
    for (int t = 0; t < T; ++t) {
      const auto h = rms(x[static_cast<size_t>(t)], ck.w(p + "input_layernorm.weight"));
      q[static_cast<size_t>(t)] = matvec(ck.w(p + "self_attn.q_proj.weight"), h, m.heads * m.hd);
      k[static_cast<size_t>(t)] = matvec(ck.w(p + "self_attn.k_proj.weight"), h, m.kv * m.hd);
      v[static_cast<size_t>(t)] = matvec(ck.w(p + "self_attn.v_proj.weight"), h, m.kv * m.hd);
      rope(q[static_cast<size_t>(t)], m.heads, t);
      rope(k[static_cast<size_t>(t)], m.kv, t);
    }
    for (int t = 0; t < T; ++t) {
      std::vector<double> att(static_cast<size_t>(m.heads * m.hd), 0.0);
      for (int h = 0; h < m.heads; ++h) {
        const int g = h / (m.heads / m.kv);
        std::vector<double> s(static_cast<size_t>(t + 1));
        for (int u = 0; u <= t; ++u) {
          double dot = 0;
          for (int i = 0; i < m.hd; ++i)
            dot += q[static_cast<size_t>(t)][static_cast<size_t>(h * m.hd + i)] *
                   k[static_cast<size_t>(u)][static_cast<size_t>(g * m.hd + i)];
          s[static_cast<size_t>(u)] = dot / std::sqrt(static_cast<double>(m.hd));
        }
        s = softmax(s);
        for (int u = 0; u <= t; ++u)
          for (int i = 0; i < m.hd; ++i)
            att[static_cast<size_t>(h * m.hd + i)] +=
                s[static_cast<size_t>(u)] * v[static_cast<size_t>(u)][static_cast<size_t>(g * m.hd + i)];
      }
      const auto o = matvec(ck.w(p + "self_attn.o_proj.weight"), att, m.d);
      for (int i = 0; i < m.d; ++i) x[static_cast<size_t>(t)][static_cast<size_t>(i)] += o[static_cast<size_t>(i)];
    }
    for (int t = 0; t < T; ++t) {
      const auto h = rms(x[static_cast<size_t>(t)], ck.w(p + "post_attention_layernorm.weight"));
      const auto probs = softmax(matvec(ck.w(p + "block_sparse_moe.gate.weight"), h, m.experts));
      const auto chosen = topk_indices(probs, m.k);
      double z = 0;
      for (int e : chosen) z += probs[static_cast<size_t>(e)];
      for (int e : chosen) {
        const std::string ex = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
        auto g = matvec(ck.w(ex + "w1.weight"), h, m.ffn);
        const auto u = matvec(ck.w(ex + "w3.weight"), h, m.ffn);
        for (int i = 0; i < m.ffn; ++i)
          g[static_cast<size_t>(i)] =
              g[static_cast<size_t>(i)] / (1 + std::exp(-g[static_cast<size_t>(i)])) * u[static_cast<size_t>(i)];
        const auto y = matvec(ck.w(ex + "w2.weight"), g, m.d);
        for (int i = 0; i < m.d; ++i)
          x[static_cast<size_t>(t)][static_cast<size_t>(i)] +=
              probs[static_cast<size_t>(e)] / z * y[static_cast<size_t>(i)];
      }
    }
  }
  std::vector<std::vector<double>> logits;
  for (int t = 0; t < T; ++t)
    logits.push_back(
        matvec(ck.w("lm_head.weight"), rms(x[static_cast<size_t>(t)], ck.w("model.norm.weight")), m.vocab));
  return logits;
}

template <ModelConfig C>
void check_llama_variant(int explicit_head_dim) {
  const LlamaDims m{C.d_model,   C.n_layers, C.n_heads,       C.n_kv_heads, C.head_dim,
                    C.n_experts, C.top_k,    C.expert_hidden, C.vocab_size, C.max_context};
  RandomCheckpoint ck;
  ck.add("model.embed_tokens.weight", {m.vocab, m.d}, 1.f);
  ck.add("lm_head.weight", {m.vocab, m.d});
  ck.add("model.norm.weight", {m.d}, 0.1f, 1.f);
  for (int l = 0; l < m.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ck.add(p + "input_layernorm.weight", {m.d}, 0.1f, 1.f);
    ck.add(p + "post_attention_layernorm.weight", {m.d}, 0.1f, 1.f);
    ck.add(p + "self_attn.q_proj.weight", {m.heads * m.hd, m.d});
    ck.add(p + "self_attn.k_proj.weight", {m.kv * m.hd, m.d});
    ck.add(p + "self_attn.v_proj.weight", {m.kv * m.hd, m.d});
    ck.add(p + "self_attn.o_proj.weight", {m.d, m.heads * m.hd});
    ck.add(p + "block_sparse_moe.gate.weight", {m.experts, m.d}, 0.5f);
    for (int e = 0; e < m.experts; ++e) {
      const std::string ex = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      ck.add(ex + "w1.weight", {m.ffn, m.d});
      ck.add(ex + "w3.weight", {m.ffn, m.d});
      ck.add(ex + "w2.weight", {m.d, m.ffn});
    }
  }
  nlohmann::json cfg = {{"model_type", "mixtral"},       {"hidden_size", m.d},
                        {"num_hidden_layers", m.layers}, {"num_attention_heads", m.heads},
                        {"num_key_value_heads", m.kv},   {"num_local_experts", m.experts},
                        {"num_experts_per_tok", m.k},    {"intermediate_size", m.ffn},
                        {"vocab_size", m.vocab},         {"max_position_embeddings", m.ctx},
                        {"rms_norm_eps", 1e-5},          {"rope_theta", 10000.0},
                        {"hidden_act", "silu"}};
  if (explicit_head_dim) cfg["head_dim"] = explicit_head_dim;
  ck.write(cfg);

  converter::ConvertOptions o;
  o.recipe = test::fp32_recipe();
  const test::AlignedBuffer buf(converter::convert_checkpoint(ck.dir.path(), o).bytes);
  ModelFile file;
  ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
  auto engine = std::make_unique<Engine<C>>();
  const Error e = engine->load(file);
  ASSERT_TRUE(e.ok()) << e.what();
  std::vector<int32_t> ids;
  for (int i = 0; i < 20; ++i) ids.push_back((i * 13 + 5) % m.vocab);
  const auto want = naive_mixtral(ck, m, ids);
  std::vector<float> got(ids.size() * static_cast<size_t>(m.vocab));
  ASSERT_TRUE(engine->prefill(ids.data(), static_cast<int>(ids.size()), got.data()).ok());
  expect_rows_close(got, want, m.vocab, "20-token prompt");
}

TEST(ModelVariants, LlamaTop1Switch) {
  check_llama_variant<config_from_key("llama-d48-l2-h4-kv2-hd12-e4-k1-f64-v40-c32")>(0);
}
TEST(ModelVariants, LlamaDenseSoftGating) {
  check_llama_variant<config_from_key("llama-d48-l2-h4-kv2-hd12-e4-k4-f64-v40-c32")>(0);
}
TEST(ModelVariants, LlamaMultiQueryAndExplicitHeadDim) {
  check_llama_variant<config_from_key("llama-d48-l1-h6-kv1-hd10-e3-k2-f40-v33-c32")>(10);
}
TEST(ModelVariants, LlamaEightExpertsTop3) {
  check_llama_variant<config_from_key("llama-d32-l2-h2-kv2-hd16-e8-k3-f24-v20-c32")>(0);
}

// ---- classic family, as makeMoE computes it ----------------------------------------------
struct ClassicDims {
  int d, layers, heads, experts, k, ffn, vocab, block;
  double capacity_factor;
};

std::vector<std::vector<double>> naive_makemoe(const RandomCheckpoint& ck, const ClassicDims& m,
                                               const std::vector<int32_t>& ids) {
  const int T = static_cast<int>(ids.size()), hs = m.d / m.heads;
  auto ln = [&](const std::vector<double>& x, const std::string& name) {
    double mean = 0, var = 0;
    for (double v : x) mean += v;
    mean /= m.d;
    for (double v : x) var += (v - mean) * (v - mean);
    var /= m.d;
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      y[i] = (x[i] - mean) / std::sqrt(var + 1e-5) * ck.w(name + ".weight")[i] + ck.w(name + ".bias")[i];
    return y;
  };
  std::vector<std::vector<double>> x(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < m.d; ++i)
      x[static_cast<size_t>(t)].push_back(
          static_cast<double>(
              ck.w("token_embedding_table.weight")[static_cast<size_t>(ids[static_cast<size_t>(t)] * m.d + i)]) +
          ck.w("position_embedding_table.weight")[static_cast<size_t>(t * m.d + i)]);
  const int capacity =
      m.capacity_factor > 0 ? static_cast<int>(static_cast<double>(T * m.k) / m.experts * m.capacity_factor) : T * m.k;
  for (int l = 0; l < m.layers; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    std::vector<std::vector<double>> h(static_cast<size_t>(T));
    for (int t = 0; t < T; ++t) h[static_cast<size_t>(t)] = ln(x[static_cast<size_t>(t)], p + "ln1");
    std::vector<std::vector<double>> cat(static_cast<size_t>(T), std::vector<double>(static_cast<size_t>(m.d)));
    for (int head = 0; head < m.heads; ++head) {
      const std::string hp = p + "sa.heads." + std::to_string(head) + ".";
      std::vector<std::vector<double>> q, k, v;
      for (int t = 0; t < T; ++t) {
        q.push_back(matvec(ck.w(hp + "query.weight"), h[static_cast<size_t>(t)], hs));
        k.push_back(matvec(ck.w(hp + "key.weight"), h[static_cast<size_t>(t)], hs));
        v.push_back(matvec(ck.w(hp + "value.weight"), h[static_cast<size_t>(t)], hs));
      }
      for (int t = 0; t < T; ++t) {
        std::vector<double> s(static_cast<size_t>(t + 1));
        for (int u = 0; u <= t; ++u) {
          double dot = 0;
          for (int i = 0; i < hs; ++i)
            dot +=
                q[static_cast<size_t>(t)][static_cast<size_t>(i)] * k[static_cast<size_t>(u)][static_cast<size_t>(i)];
          s[static_cast<size_t>(u)] = dot * std::pow(m.d, -0.5);  // makeMoE's C**-0.5, C = n_embed
        }
        s = softmax(s);
        for (int u = 0; u <= t; ++u)
          for (int i = 0; i < hs; ++i)
            cat[static_cast<size_t>(t)][static_cast<size_t>(head * hs + i)] +=
                s[static_cast<size_t>(u)] * v[static_cast<size_t>(u)][static_cast<size_t>(i)];
      }
    }
    for (int t = 0; t < T; ++t) {
      const auto o = matvec(ck.w(p + "sa.proj.weight"), cat[static_cast<size_t>(t)], m.d, &ck.w(p + "sa.proj.bias"));
      for (int i = 0; i < m.d; ++i) x[static_cast<size_t>(t)][static_cast<size_t>(i)] += o[static_cast<size_t>(i)];
    }
    // Router for every token, then experts in index order, each taking its first `capacity` tokens.
    std::vector<std::vector<double>> hn(static_cast<size_t>(T)), gates(static_cast<size_t>(T));
    std::vector<std::vector<int>> chosen(static_cast<size_t>(T));
    for (int t = 0; t < T; ++t) {
      hn[static_cast<size_t>(t)] = ln(x[static_cast<size_t>(t)], p + "ln2");
      const auto logits = matvec(ck.w(p + "smoe.router.topkroute_linear.weight"), hn[static_cast<size_t>(t)], m.experts,
                                 &ck.w(p + "smoe.router.topkroute_linear.bias"));
      chosen[static_cast<size_t>(t)] = topk_indices(logits, m.k);
      std::vector<double> sparse(static_cast<size_t>(m.experts), -INFINITY);
      for (int e : chosen[static_cast<size_t>(t)]) sparse[static_cast<size_t>(e)] = logits[static_cast<size_t>(e)];
      gates[static_cast<size_t>(t)] = softmax(sparse);
    }
    std::vector<std::vector<double>> update(static_cast<size_t>(T), std::vector<double>(static_cast<size_t>(m.d)));
    for (int e = 0; e < m.experts; ++e) {
      int taken = 0;
      const std::string ex = p + "smoe.experts." + std::to_string(e) + ".net.";
      for (int t = 0; t < T; ++t) {
        const auto& c = chosen[static_cast<size_t>(t)];
        if (std::find(c.begin(), c.end(), e) == c.end() || taken == capacity) continue;
        ++taken;
        auto hid = matvec(ck.w(ex + "0.weight"), hn[static_cast<size_t>(t)], m.ffn, &ck.w(ex + "0.bias"));
        for (auto& v : hid) v = std::max(0.0, v);
        const auto y = matvec(ck.w(ex + "2.weight"), hid, m.d, &ck.w(ex + "2.bias"));
        for (int i = 0; i < m.d; ++i)
          update[static_cast<size_t>(t)][static_cast<size_t>(i)] +=
              gates[static_cast<size_t>(t)][static_cast<size_t>(e)] * y[static_cast<size_t>(i)];
      }
    }
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < m.d; ++i)
        x[static_cast<size_t>(t)][static_cast<size_t>(i)] += update[static_cast<size_t>(t)][static_cast<size_t>(i)];
  }
  std::vector<std::vector<double>> logits;
  for (int t = 0; t < T; ++t)
    logits.push_back(
        matvec(ck.w("lm_head.weight"), ln(x[static_cast<size_t>(t)], "ln_f"), m.vocab, &ck.w("lm_head.bias")));
  return logits;
}

template <ModelConfig C>
void check_classic_variant(double capacity_factor) {
  const ClassicDims m{C.d_model,       C.n_layers,   C.n_heads,     C.n_experts,    C.top_k,
                      C.expert_hidden, C.vocab_size, C.max_context, capacity_factor};
  const int hs = m.d / m.heads;
  RandomCheckpoint ck;
  ck.add("token_embedding_table.weight", {m.vocab, m.d}, 1.f);
  ck.add("position_embedding_table.weight", {m.block, m.d}, 0.5f);
  for (const char* n : {"ln_f"})
    ck.add(std::string(n) + ".weight", {m.d}, 0.1f, 1.f), ck.add(std::string(n) + ".bias", {m.d}, 0.1f);
  ck.add("lm_head.weight", {m.vocab, m.d});
  ck.add("lm_head.bias", {m.vocab});
  for (int l = 0; l < m.layers; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    for (const char* n : {"ln1", "ln2"})
      ck.add(p + n + ".weight", {m.d}, 0.1f, 1.f), ck.add(p + n + ".bias", {m.d}, 0.1f);
    for (int h = 0; h < m.heads; ++h)
      for (const char* w : {"key", "query", "value"})
        ck.add(p + "sa.heads." + std::to_string(h) + "." + w + ".weight", {hs, m.d}, 0.4f);
    ck.add(p + "sa.proj.weight", {m.d, m.d});
    ck.add(p + "sa.proj.bias", {m.d});
    ck.add(p + "smoe.router.topkroute_linear.weight", {m.experts, m.d}, 0.5f);
    ck.add(p + "smoe.router.topkroute_linear.bias", {m.experts});
    ck.add(p + "smoe.router.noise_linear.weight", {m.experts, m.d});
    ck.add(p + "smoe.router.noise_linear.bias", {m.experts});
    for (int e = 0; e < m.experts; ++e) {
      const std::string ex = p + "smoe.experts." + std::to_string(e) + ".net.";
      ck.add(ex + "0.weight", {m.ffn, m.d});
      ck.add(ex + "0.bias", {m.ffn});
      ck.add(ex + "2.weight", {m.d, m.ffn});
      ck.add(ex + "2.bias", {m.d});
    }
  }
  std::string chars;
  for (int i = 0; i < m.vocab; ++i) chars += static_cast<char>('!' + i);
  ck.write({{"model_type", "makemoe"},
            {"vocab_size", m.vocab},
            {"n_embed", m.d},
            {"n_head", m.heads},
            {"n_layer", m.layers},
            {"block_size", m.block},
            {"num_experts", m.experts},
            {"top_k", m.k},
            {"expert_hidden", m.ffn},
            {"capacity_factor", capacity_factor}},
           nlohmann::json({{"type", "char"}, {"chars", chars}}).dump());
  converter::ConvertOptions o;
  o.recipe = test::fp32_recipe();
  const test::AlignedBuffer buf(converter::convert_checkpoint(ck.dir.path(), o).bytes);
  ModelFile file;
  ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
  auto engine = std::make_unique<Engine<C>>();
  ASSERT_TRUE(engine->load(file).ok());
  for (int T : {1, 5, m.block}) {
    std::vector<int32_t> ids;
    for (int i = 0; i < T; ++i) ids.push_back((i * 7 + 2) % m.vocab);
    const auto want = naive_makemoe(ck, m, ids);
    std::vector<float> got(ids.size() * static_cast<size_t>(m.vocab));
    engine->reset();
    ASSERT_TRUE(engine->prefill(ids.data(), T, got.data()).ok());
    expect_rows_close(got, want, m.vocab, ("window of " + std::to_string(T)).c_str());
  }
}

TEST(ModelVariants, ClassicTop1NoCapacity) {
  check_classic_variant<config_from_key("classic-d24-l2-h3-kv3-hd8-e4-k1-f40-v30-c20")>(0.);
}
TEST(ModelVariants, ClassicTop1Capacity125) {
  check_classic_variant<config_from_key("classic-d24-l2-h3-kv3-hd8-e4-k1-f40-v30-c20")>(1.25);
}
TEST(ModelVariants, ClassicDenseGatingCapacity2) {
  check_classic_variant<config_from_key("classic-d24-l2-h3-kv3-hd8-e3-k3-f40-v30-c20")>(2.0);
}

}  // namespace
}  // namespace moe
