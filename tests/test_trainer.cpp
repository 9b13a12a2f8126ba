// The trainer's maths: every op's backward against central finite differences (double
// precision), whole tiny models of both families with every training feature on
// (router noise, dropout, capacity drops, both load-balancing losses, z-loss), the
// forward loss against PyTorch's on the makemoe-tiny fixture, its export read back by
// moe_convert and the engine, and the fast GEMM against the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "converter/converter.hpp"
#include "moe/engine.hpp"
#include "support/test_support.hpp"
#include "trainer/checkpoint_io.hpp"
#include "trainer/gemm.hpp"
#include "trainer/model.hpp"
#include "trainer/ops.hpp"
#include "trainer/optimizer.hpp"

namespace moe::train {
namespace {

std::vector<double> random_vec(size_t n, std::mt19937& rng, double scale = 1.0) {
  std::normal_distribution<double> d(0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Checks d/dx of L(x) = f(x) against `analytic` by central differences over every element.
void expect_gradient(std::vector<double>& x, const std::vector<double>& analytic, const std::function<double()>& f,
                     const char* what, double tol = 1e-6) {
  ASSERT_EQ(x.size(), analytic.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double h = 1e-6 * std::max(1.0, std::fabs(x[i])), keep = x[i];
    x[i] = keep + h;
    const double up = f();
    x[i] = keep - h;
    const double down = f();
    x[i] = keep;
    const double numeric = (up - down) / (2 * h);
    const double err = std::fabs(numeric - analytic[i]) / std::max(1e-3, std::fabs(numeric) + std::fabs(analytic[i]));
    worst = std::max(worst, err);
    ASSERT_LT(err, tol) << what << " element " << i << ": analytic " << analytic[i] << ", numeric " << numeric;
  }
  std::printf("  %-28s %zu elements, worst relative error %.1e\n", what, x.size(), worst);
}

double dot(const std::vector<double>& a, const double* b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ---- ops ----------------------------------------------------------------------------------

TEST(TrainerOps, LinearGradients) {
  std::mt19937 rng(1);
  const int N = 5, C = 7, OC = 4;
  auto x = random_vec(N * C, rng), w = random_vec(OC * C, rng), b = random_vec(OC, rng), R = random_vec(N * OC, rng);
  std::vector<double> out(N * OC);
  auto f = [&] {
    linear_forward(out.data(), x.data(), w.data(), b.data(), N, C, OC);
    return dot(R, out.data());
  };
  std::vector<double> dx(N * C, 0.0), dw(OC * C), db(OC);
  linear_backward(dx.data(), true, dw.data(), db.data(), R.data(), x.data(), w.data(), N, C, OC);
  expect_gradient(x, dx, f, "linear: input");
  expect_gradient(w, dw, f, "linear: weight");
  expect_gradient(b, db, f, "linear: bias");
}

TEST(TrainerOps, NormGradients) {
  std::mt19937 rng(2);
  const int N = 4, C = 9;
  auto x = random_vec(N * C, rng, 2), w = random_vec(C, rng), b = random_vec(C, rng), R = random_vec(N * C, rng);
  std::vector<double> out(N * C), mean(N), rstd(N);
  auto ln = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5);
    return dot(R, out.data());
  };
  ln();
  std::vector<double> dx(N * C, 0.0), dw(C), db(C);
  layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
  expect_gradient(x, dx, ln, "layernorm: input");
  expect_gradient(w, dw, ln, "layernorm: weight");
  expect_gradient(b, db, ln, "layernorm: bias");
  auto rms = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
    return dot(R, out.data());
  };
  rms();
  std::fill(dx.begin(), dx.end(), 0.0);
  rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
  expect_gradient(x, dx, rms, "rmsnorm: input");
  expect_gradient(w, dw, rms, "rmsnorm: weight");
}

TEST(TrainerOps, AttentionRopeGradients) {
  std::mt19937 rng(3);
  // GQA: 4 query heads over 2 kv heads, with a dropout mask.
  const AttentionShape s{2, 5, 4, 2, 6, 4 * 6, 2 * 6, 4 * 6, 0.4f};
  const int N = s.B * s.T;
  auto q = random_vec(N * s.q_stride, rng), k = random_vec(N * s.kv_stride, rng), v = random_vec(N * s.kv_stride, rng);
  auto R = random_vec(N * s.q_stride, rng);
  std::vector<double> mask(s.B * s.H * s.T * s.T);
  for (auto& m : mask) m = rng() % 5 == 0 ? 0.0 : 1.25;
  std::vector<double> out(N * s.q_stride), att(mask.size());
  // q and k are rotated (RoPE) before attention, as in the llama family.
  auto f = [&] {
    std::vector<double> qr = q, kr = k;
    rope_forward(qr.data(), N, s.T, s.H, s.hd, s.q_stride, 10000.f, false);
    rope_forward(kr.data(), N, s.T, s.KVH, s.hd, s.kv_stride, 10000.f, false);
    attention_forward(out.data(), att.data(), mask.data(), qr.data(), kr.data(), v.data(), s);
    return dot(R, out.data());
  };
  f();
  std::vector<double> qr = q, kr = k;
  rope_forward(qr.data(), N, s.T, s.H, s.hd, s.q_stride, 10000.f, false);
  rope_forward(kr.data(), N, s.T, s.KVH, s.hd, s.kv_stride, 10000.f, false);
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  attention_backward(dq.data(), dk.data(), dv.data(), R.data(), att.data(), mask.data(), qr.data(), kr.data(), v.data(),
                     s);
  rope_backward(dq.data(), N, s.T, s.H, s.hd, s.q_stride, 10000.f);
  rope_backward(dk.data(), N, s.T, s.KVH, s.hd, s.kv_stride, 10000.f);
  // Looser: these gradients reach 1e-4, where the differences' round-off (~1e-9) is 1e-5 relative.
  expect_gradient(q, dq, f, "attention+rope: q", 1e-5);
  expect_gradient(k, dk, f, "attention+rope: k", 1e-5);
  expect_gradient(v, dv, f, "attention: v", 1e-5);
}

TEST(TrainerOps, ActivationAndLossGradients) {
  std::mt19937 rng(4);
  const int n = 40;
  auto g = random_vec(n, rng, 2), u = random_vec(n, rng), R = random_vec(n, rng);
  std::vector<double> z(n);
  auto f = [&] {
    swiglu_forward(z.data(), g.data(), u.data(), n);
    return dot(R, z.data());
  };
  std::vector<double> dg(n), du(n);
  swiglu_backward(dg.data(), du.data(), R.data(), g.data(), u.data(), n);
  expect_gradient(g, dg, f, "swiglu: gate");
  expect_gradient(u, du, f, "swiglu: up");
  // relu (the kink is avoided: inputs at least 0.1 from zero)
  auto h = random_vec(n, rng);
  for (auto& x : h) x = x >= 0 ? x + 0.1 : x - 0.1;
  std::vector<double> bias(n, 0.0), hz(n);
  auto fr = [&] {
    hz = h;
    bias_relu_forward(hz.data(), bias.data(), 1, n);
    return dot(R, hz.data());
  };
  fr();
  std::vector<double> dh = R;
  relu_backward(dh.data(), hz.data(), n);
  expect_gradient(h, dh, fr, "relu");
  // cross-entropy
  const int N = 3, V = 7;
  auto logits = random_vec(N * V, rng, 2);
  const int32_t targets[N] = {1, 6, 0};
  std::vector<double> probs(N * V), losses(N);
  auto fc = [&] { return crossentropy_forward(probs.data(), losses.data(), logits.data(), targets, N, V); };
  fc();
  std::vector<double> dl(N * V);
  crossentropy_backward(dl.data(), probs.data(), targets, N, V);
  expect_gradient(logits, dl, fc, "cross-entropy: logits");
}

// ---- whole models ---------------------------------------------------------------------------

TrainConfig tiny_config(Family family) {
  TrainConfig c;
  c.model = family == Family::classic ? config_from_key("classic-d8-l2-h2-kv2-hd4-e4-k2-f12-v11-c6")
                                      : config_from_key("llama-d8-l2-h4-kv2-hd2-e4-k2-f12-v11-c6");
  c.constants.attention_scale =
      family == Family::classic ? AttentionScaleRule::inv_sqrt_model_dim : AttentionScaleRule::inv_sqrt_head_dim;
  c.router_noise = true;
  c.constants.capacity_factor = 0.75;  // 2*6*2/4*0.75 = 4 slots per expert of 6 expected: some choices dropped
  c.dropout = 0.2f;
  c.z_loss_coef = 0.01f;
  c.batch = 2;
  return c;
}

void check_whole_model(Family family, AuxLoss aux) {
  TrainConfig c = tiny_config(family);
  c.aux_loss = aux;
  c.aux_coef = 0.1f;
  Model<double> model(c, c.batch);
  model.init_params(7);
  const int B = 2, T = 6, V = c.model.vocab_size;
  std::vector<int32_t> in(B * T), tg(B * T);
  for (int i = 0; i < B * T; ++i) in[i] = (i * 5 + 1) % V, tg[i] = (i * 3 + 2) % V;
  const uint64_t step = 3;  // fixes the dropout masks and the router noise
  model.forward(in.data(), tg.data(), B, T, true, step);
  long dropped = 0;
  for (int l = 0; l < c.model.n_layers; ++l)
    for (int e = 0; e < c.model.n_experts; ++e) dropped += model.stats().routed[l][e] - model.stats().kept[l][e];
  EXPECT_GT(dropped, 0) << "the check should cover tokens over capacity";
  EXPECT_GT(model.stats().aux, 0);
  EXPECT_GT(model.stats().z, 0);
  model.backward();
  const std::vector<double> analytic = model.grads;
  model.set_replay_routing(true);  // finite differences must not change which experts run
  expect_gradient(
      model.params, analytic, [&] { return model.forward(in.data(), tg.data(), B, T, true, step); },
      family == Family::classic ? "classic model, all parameters" : "llama model, all parameters", 2e-5);
}

TEST(TrainerModel, ClassicGradientsWithSwitchLoss) { check_whole_model(Family::classic, AuxLoss::switch_transformer); }
TEST(TrainerModel, ClassicGradientsWithCvLoss) { check_whole_model(Family::classic, AuxLoss::cv_squared); }
TEST(TrainerModel, LlamaGradientsWithSwitchLoss) { check_whole_model(Family::llama, AuxLoss::switch_transformer); }
TEST(TrainerModel, LlamaGradientsWithCvLoss) { check_whole_model(Family::llama, AuxLoss::cv_squared); }

TEST(TrainerModel, DenseGatingAndTop1Gradients) {
  for (int k : {1, 4}) {
    TrainConfig c = tiny_config(Family::classic);
    c.model.top_k = k;
    c.router_noise = k == 1;
    c.constants.capacity_factor = k == 1 ? 1.0 : 0.0;
    Model<double> model(c, 2);
    model.init_params(9);
    std::vector<int32_t> in(12), tg(12);
    for (int i = 0; i < 12; ++i) in[i] = (i * 7) % 11, tg[i] = (i + 4) % 11;
    model.forward(in.data(), tg.data(), 2, 6, true, 1);
    model.backward();
    const std::vector<double> analytic = model.grads;
    model.set_replay_routing(true);
    expect_gradient(
        model.params, analytic, [&] { return model.forward(in.data(), tg.data(), 2, 6, true, 1); },
        k == 1 ? "top-1 model" : "dense gating model", 2e-5);
  }
}

// ---- equality with PyTorch ---------------------------------------------------------------

// The makemoe-tiny fixture in eval mode: our forward loss equals the loss PyTorch's own
// logits (reference.json) give on the same tokens, to 1e-5 relative. The target of the
// last position is the reference's own greedy next token.
TEST(TrainerModel, MakemoeForwardLossEqualsPyTorch) {
  TrainConfig c;
  c.model = config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");
  c.constants.attention_scale = AttentionScaleRule::inv_sqrt_model_dim;  // makeMoE's, as the fixture was made
  c.constants.capacity_factor = 1.0;
  c.batch = 1;
  Model<float> model(c, 1);
  import_model(test::fixture_dir("makemoe-tiny"), model);
  for (const auto& rc : test::load_reference("makemoe-tiny")) {
    const int n = static_cast<int>(rc.input_ids.size()), T = static_cast<int>(rc.logits.size());
    std::vector<int32_t> in(rc.input_ids.end() - T, rc.input_ids.end()), tg(T);
    for (int t = 0; t < T; ++t) tg[t] = t + 1 < T ? in[t + 1] : rc.greedy[0];
    double want = 0;
    for (int t = 0; t < T; ++t) {
      const auto& row = rc.logits[t];
      double m = row[0], z = 0;
      for (float v : row) m = std::max(m, static_cast<double>(v));
      for (float v : row) z += std::exp(v - m);
      want += std::log(z) + m - row[tg[t]];
    }
    want /= T;
    const double got = model.forward(in.data(), tg.data(), 1, T, false, 0);
    EXPECT_NEAR(got, want, 1e-5 * want) << "prompt of " << n << " tokens";
    std::printf("  makemoe-tiny, %2d-token window: loss %.7f, PyTorch %.7f\n", T, got, want);
  }
}

// ---- export -> moe_convert -> engine ------------------------------------------------------

template <ModelConfig C>
void check_export_roundtrip(TrainConfig c) {
  c.model.vocab_size = C.vocab_size;
  Model<float> model(c, 1);
  model.init_params(11);
  // A few optimizer steps so the weights are not just their initialisation.
  AdamW opt(c, model.num_params(), decayed_prefix(model.table(), c.decay_everything));
  std::vector<int32_t> in(C.max_context), tg(C.max_context);
  for (int step = 0; step < 3; ++step) {
    for (int t = 0; t < C.max_context; ++t) in[t] = (t * 3 + step) % C.vocab_size, tg[t] = (t * 5 + 1) % C.vocab_size;
    model.forward(in.data(), tg.data(), 1, C.max_context, true, step);
    model.backward();
    opt.update(model.params, model.grads, step);
  }
  test::TempDir dir;
  std::vector<uint32_t> vocab;
  for (int i = 0; i < C.vocab_size; ++i) vocab.push_back(static_cast<uint32_t>('!' + i));
  export_model(dir.path(), c, vocab, model.table(), model.params);

  converter::ConvertOptions o;
  o.recipe = test::fp32_recipe();
  const test::AlignedBuffer buf(converter::convert_checkpoint(dir.path(), o).bytes);
  ModelFile file;
  ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
  EXPECT_EQ(file.tokenizer().size(), C.vocab_size);
  auto engine = std::make_unique<Engine<C>>();
  ASSERT_TRUE(engine->load(file).ok());
  std::vector<float> logits(static_cast<size_t>(C.max_context) * C.vocab_size);
  ASSERT_TRUE(engine->prefill(in.data(), C.max_context, logits.data()).ok());
  model.forward(in.data(), tg.data(), 1, C.max_context, false, 0);
  double max_ref = 0, max_diff = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(model.logits()[i])));
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(logits[i] - model.logits()[i])));
  }
  EXPECT_LT(max_diff / max_ref, 1e-4);
  // And the trainer reads its own export back unchanged.
  Model<float> again(c, 1);
  import_model(dir.path(), again);
  EXPECT_EQ(again.params, model.params);
}

TEST(TrainerExport, ClassicRoundTripsThroughConverterAndEngine) {
  TrainConfig c = tiny_config(Family::classic);
  c.model = config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16");
  c.constants.capacity_factor = 1.0;
  check_export_roundtrip<config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16")>(c);
}

TEST(TrainerExport, LlamaRoundTripsThroughConverterAndEngine) {
  TrainConfig c = tiny_config(Family::llama);
  c.model = config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
  c.router_noise = false;
  c.constants.capacity_factor = 0.;  // the engine runs Mixtral without capacity
  check_export_roundtrip<config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128")>(c);
}

// ---- GEMM ----------------------------------------------------------------------------------

TEST(TrainerGemm, FastPathEqualsReferenceForEveryLayout) {
  std::mt19937 rng(5);
  for (int M : {1, 6, 7, 8, 9, 13, 33}) {  // whole tiles of MR rows (6 with AVX2, 8 with AVX-512) and remainders
    for (int N : {1, 15, 16, 31, 32, 33, 70}) {
      for (int K : {1, 5, 64}) {
        std::vector<float> A(M * K), B(K * N), C1(M * N), C2(M * N);
        for (auto& x : A) x = std::normal_distribution<float>()(rng);
        for (auto& x : B) x = std::normal_distribution<float>()(rng);
        for (int layout = 0; layout < 4; ++layout) {
          // A row-major or transposed; B row-major or transposed.
          const long ar = layout & 1 ? 1 : K, ac = layout & 1 ? M : 1, br = layout & 2 ? 1 : N, bc = layout & 2 ? K : 1;
          for (bool acc : {false, true}) {
            std::fill(C1.begin(), C1.end(), 0.5f);
            std::fill(C2.begin(), C2.end(), 0.5f);
            gemm<float>(M, N, K, A.data(), ar, ac, B.data(), br, bc, C1.data(), N, acc);
            gemm_reference<float>(M, N, K, A.data(), ar, ac, B.data(), br, bc, C2.data(), N, acc);
            for (int i = 0; i < M * N; ++i)
              ASSERT_NEAR(C1[i], C2[i], 1e-5 * (K + 1))
                  << "M " << M << " N " << N << " K " << K << " layout " << layout << " acc " << acc;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace moe::train
