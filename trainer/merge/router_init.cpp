// The frankenMoE router (merge.hpp: router_rows). The hidden-state method runs the base
// model with the trainer's forward pass, which is runtime-sized: any base config works.
#include <algorithm>
#include <cmath>

#include "converter/checkpoint_writer.hpp"
#include "converter/input_error.hpp"
#include "trainer/checkpoint_io.hpp"
#include "trainer/merge/merge.hpp"
#include "trainer/merge/merge_math.hpp"
#include "trainer/model.hpp"

namespace moe::merge {

namespace {

// A long prompt (a whole file of an expert's text) is read as at most this many windows,
// spread evenly over it: the mean settles long before.
constexpr size_t kMaxWindowsPerPrompt = 256;
constexpr int kBatch = 16;  // windows per forward pass
// The classifier router learns from fewer windows per prompt (its fit is the slow part).
constexpr size_t kClassifierWindowsPerPrompt = 64;
constexpr int kClassifierSteps = 200;

std::vector<int32_t> encode(const converter::Checkpoint& base, const std::string& prompt, const std::string& what) {
  const std::vector<uint32_t> cps = converter::chars_from_utf8(prompt, what);
  std::vector<int32_t> ids;
  ids.reserve(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) {
    const auto it = std::find(base.chars.begin(), base.chars.end(), cps[i]);  // ids follow tokenizer.json's order
    if (it == base.chars.end()) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(cps[i]));
      throw InputError(what + ": character " + buf + " (position " + std::to_string(i) +
                       ") is not in the base model's vocabulary");
    }
    ids.push_back(static_cast<int32_t>(it - base.chars.begin()));
  }
  return ids;
}

// Window starts covering `n` tokens with windows of T (the last one ends at n).
std::vector<size_t> window_starts(size_t n, size_t T, size_t max_windows) {
  if (n <= T) return {0};
  const size_t last = n - T;
  size_t count = (n + T - 1) / T;
  count = std::min(count, max_windows);
  std::vector<size_t> starts;
  for (size_t w = 0; w < count; ++w) starts.push_back(count == 1 ? 0 : last * w / (count - 1));
  return starts;
}

// Runs the model over windows of the context length covering `ids` (at most
// `max_windows`, spread evenly), kBatch windows per forward pass; after each pass calls
// on_batch(tokens) with the number of tokens it ran (the model's activations hold them).
template <class OnBatch>
void run_windows(train::Model<float>& model, const std::vector<int32_t>& ids, size_t T, size_t max_windows,
                 OnBatch&& on_batch) {
  const std::vector<size_t> starts = window_starts(ids.size(), T, max_windows);
  const int len = static_cast<int>(std::min(T, ids.size()));  // all windows of a prompt have one length
  std::vector<int32_t> batch(static_cast<size_t>(kBatch) * static_cast<size_t>(len));
  for (size_t w0 = 0; w0 < starts.size(); w0 += kBatch) {
    const int B = static_cast<int>(std::min<size_t>(kBatch, starts.size() - w0));
    for (int b = 0; b < B; ++b)
      std::copy_n(ids.begin() + static_cast<long>(starts[w0 + static_cast<size_t>(b)]), len,
                  batch.begin() + static_cast<long>(b) * len);
    model.forward(batch.data(), nullptr, B, len, false, 0);
    on_batch(static_cast<size_t>(B) * static_cast<size_t>(len));
  }
}

using Prompts = std::vector<std::string>;

// Mean over prompts of (mean over a prompt's tokens of the residual entering each layer):
// [layers][d].
std::vector<double> mean_hidden(train::Model<float>& model, const converter::Checkpoint& base, const Prompts& prompts,
                                const std::string& what) {
  const ModelConfig& c = base.config;
  const size_t d = static_cast<size_t>(c.d_model), L = static_cast<size_t>(c.n_layers),
               T = static_cast<size_t>(c.max_context);
  std::vector<double> total(L * d, 0.0);
  for (size_t p = 0; p < prompts.size(); ++p) {
    const std::string name = what + "[" + std::to_string(p) + "]";
    const std::vector<int32_t> ids = encode(base, prompts[p], name);
    if (ids.empty()) throw InputError(name + " is empty");
    std::vector<double> sum(L * d, 0.0);
    long tokens = 0;
    run_windows(model, ids, T, kMaxWindowsPerPrompt, [&](size_t n) {
      for (size_t l = 0; l < L; ++l) {
        const float* h = model.residual(static_cast<int>(l));
        for (size_t t = 0; t < n; ++t)
          for (size_t i = 0; i < d; ++i) sum[l * d + i] += h[t * d + i];
      }
      tokens += static_cast<long>(n);
    });
    for (size_t i = 0; i < total.size(); ++i) total[i] += sum[i] / static_cast<double>(tokens);
  }
  for (double& v : total) v /= static_cast<double>(prompts.size());
  return total;
}

std::vector<double> mean_embedding(const converter::Checkpoint& base, const std::vector<float>& table,
                                   const Prompts& prompts, const std::string& what) {
  const size_t d = static_cast<size_t>(base.config.d_model);
  std::vector<double> total(d, 0.0);
  for (size_t p = 0; p < prompts.size(); ++p) {
    const std::vector<int32_t> ids = encode(base, prompts[p], what + "[" + std::to_string(p) + "]");
    if (ids.empty()) throw InputError(what + "[" + std::to_string(p) + "] is empty");
    for (int32_t id : ids)
      for (size_t i = 0; i < d; ++i)
        total[i] += table[static_cast<size_t>(id) * d + i] / static_cast<double>(ids.size());
  }
  for (double& v : total) v /= static_cast<double>(prompts.size());
  return total;
}

void normalize_rows(std::vector<float>& rows, size_t d) {
  for (size_t r = 0; r * d < rows.size(); ++r) {
    double ss = 0;
    for (size_t i = 0; i < d; ++i) ss += static_cast<double>(rows[r * d + i]) * rows[r * d + i];
    const double inv = 1.0 / std::max(std::sqrt(ss), 1e-8);
    for (size_t i = 0; i < d; ++i) rows[r * d + i] = static_cast<float>(rows[r * d + i] * inv);
  }
}

// Layer `layer`'s router input for every token of each expert's prompts: X is [N, d],
// labels[n] the expert whose prompts token n came from.
struct RouterSamples {
  std::vector<float> X;
  std::vector<int> labels;
};

RouterSamples router_inputs(train::Model<float>& model, const converter::Checkpoint& base, const MergeRecipe& r,
                            int layer) {
  const ModelConfig& c = base.config;
  const size_t d = static_cast<size_t>(c.d_model), T = static_cast<size_t>(c.max_context);
  RouterSamples s;
  for (size_t e = 0; e < r.experts.size(); ++e) {
    const std::string what = "experts[" + std::to_string(e) + "].positive_prompts";
    for (size_t p = 0; p < r.experts[e].positive.size(); ++p) {
      const std::vector<int32_t> ids = encode(base, r.experts[e].positive[p], what + "[" + std::to_string(p) + "]");
      if (ids.empty()) throw InputError(what + "[" + std::to_string(p) + "] is empty");
      run_windows(model, ids, T, kClassifierWindowsPerPrompt, [&](size_t n) {
        const float* x = model.moe_input(layer);
        s.X.insert(s.X.end(), x, x + n * d);
        s.labels.insert(s.labels.end(), n, static_cast<int>(e));
      });
    }
  }
  return s;
}

// Multinomial logistic regression of the expert on the router input, each expert's tokens
// weighted equally in total (so a longer prompt set does not become the prior). Full-batch
// Adam from zero: deterministic. W: [E, d]; b: [E] (nullptr: no bias, the llama router).
void fit_router(const std::vector<float>& X, const std::vector<int>& labels, size_t d, size_t E, float* W, float* b) {
  const size_t N = labels.size();
  std::vector<double> class_weight(E, 0.0);
  for (int y : labels) class_weight[static_cast<size_t>(y)] += 1;
  for (double& w : class_weight) w = w > 0 ? 1.0 / (w * static_cast<double>(E)) : 0.0;
  const size_t P = E * d + (b ? E : 0);
  std::vector<double> theta(P, 0.0), grad(P), m(P, 0.0), v(P, 0.0);
  std::vector<double> z(E);
  constexpr double lr = 0.05, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, decay = 1e-4;
  for (int step = 1; step <= kClassifierSteps; ++step) {
    std::fill(grad.begin(), grad.end(), 0.0);
    for (size_t n = 0; n < N; ++n) {
      const float* x = X.data() + n * d;
      double mx = -1e300;
      for (size_t e = 0; e < E; ++e) {
        double acc = b ? theta[E * d + e] : 0.0;
        for (size_t i = 0; i < d; ++i) acc += theta[e * d + i] * x[i];
        z[e] = acc;
        mx = std::max(mx, acc);
      }
      double sum = 0;
      for (size_t e = 0; e < E; ++e) sum += (z[e] = std::exp(z[e] - mx));
      const double w = class_weight[static_cast<size_t>(labels[n])];
      for (size_t e = 0; e < E; ++e) {
        const double g = w * (z[e] / sum - (static_cast<int>(e) == labels[n] ? 1.0 : 0.0));
        for (size_t i = 0; i < d; ++i) grad[e * d + i] += g * x[i];
        if (b) grad[E * d + e] += g;
      }
    }
    for (size_t k = 0; k < P; ++k) {
      const double g = grad[k] + (k < E * d ? decay * theta[k] : 0.0);
      m[k] = beta1 * m[k] + (1 - beta1) * g;
      v[k] = beta2 * v[k] + (1 - beta2) * g * g;
      theta[k] -= lr * (m[k] / (1 - std::pow(beta1, step))) / (std::sqrt(v[k] / (1 - std::pow(beta2, step))) + eps);
    }
  }
  for (size_t k = 0; k < E * d; ++k) W[k] = static_cast<float>(theta[k]);
  if (b)
    for (size_t e = 0; e < E; ++e) b[e] = static_cast<float>(theta[E * d + e]);
}

}  // namespace

RouterInit router_init(const converter::Checkpoint& base, const MergeRecipe& r, const ModelConfig& mixture,
                       const TensorSource& tensor) {
  const ModelConfig& c = base.config;
  const size_t d = static_cast<size_t>(c.d_model), L = static_cast<size_t>(c.n_layers), E = r.experts.size();
  RouterInit out;
  out.weight.assign(L * E * d, 0.f);
  out.bias.assign(L * E, 0.f);
  std::vector<float>& rows = out.weight;
  const auto put = [&](size_t l, size_t e, const double* v) {
    for (size_t i = 0; i < d; ++i) rows[(l * E + e) * d + i] = static_cast<float>(v[i]);
  };

  if (r.gate_mode == GateMode::random) {
    // Box-Muller over the merge generator: the same seed gives the same router everywhere.
    for (size_t i = 0; i < rows.size(); ++i) {
      const double u1 = std::max(uniform01(r.seed, 0x7a7e, 2 * i), 1e-300), u2 = uniform01(r.seed, 0x7a7e, 2 * i + 1);
      rows[i] = static_cast<float>(std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2));
    }
    normalize_rows(rows, d);
    return out;
  }
  if (base.chars.empty())
    throw InputError("gate_mode " + std::string(gate_mode_name(r.gate_mode)) + " needs prompts as text, but '" +
                     base.dir.string() + "' has no char tokenizer.json: use gate_mode random");

  if (r.gate_mode == GateMode::cheap_embed) {
    TensorSpec emb{TensorRole::token_embedding, -1, -1, c.vocab_size, c.d_model, TensorClass::embedding};
    const std::vector<float> table = base.load(emb);
    for (size_t e = 0; e < E; ++e) {
      const std::string what = "experts[" + std::to_string(e) + "]";
      std::vector<double> v = mean_embedding(base, table, r.experts[e].positive, what + ".positive_prompts");
      if (!r.experts[e].negative.empty()) {
        const std::vector<double> neg = mean_embedding(base, table, r.experts[e].negative, what + ".negative_prompts");
        for (size_t i = 0; i < d; ++i) v[i] -= neg[i];
      }
      for (size_t l = 0; l < L; ++l) put(l, e, v.data());
    }
    normalize_rows(rows, d);
    return out;
  }

  if (r.gate_mode == GateMode::classifier) {
    // Fitted in the assembled mixture, layer by layer: once layer l routes to the donors'
    // FFNs, layer l+1 sees a different residual stream than the base's.
    train::TrainConfig tc = train::inference_config(base);
    tc.model = mixture;
    tc.constants.capacity_factor = 0;
    train::Model<float> model(tc, kBatch);
    for (const train::ParamInfo& p : model.table()) {
      if (p.spec.role == TensorRole::router || p.spec.role == TensorRole::router_bias) continue;  // zero until fitted
      const std::vector<float> v = tensor(p.spec);
      std::copy(v.begin(), v.end(), model.params.begin() + p.offset);
    }
    for (size_t l = 0; l < L; ++l) {
      const RouterSamples s = router_inputs(model, base, r, static_cast<int>(l));
      float* W = rows.data() + l * E * d;
      float* b = c.has_biases() ? out.bias.data() + l * E : nullptr;
      fit_router(s.X, s.labels, d, E, W, b);
      for (const train::ParamInfo& p : model.table()) {
        if (p.spec.layer != static_cast<int>(l)) continue;
        if (p.spec.role == TensorRole::router) std::copy(W, W + E * d, model.params.begin() + p.offset);
        if (p.spec.role == TensorRole::router_bias) std::copy(b, b + E, model.params.begin() + p.offset);
      }
    }
    return out;
  }

  train::Model<float> model(train::inference_config(base), kBatch);
  train::import_model(base.dir, model);
  // gate_mode hidden: the base model's own residual stream.
  for (size_t e = 0; e < E; ++e) {
    const std::string what = "experts[" + std::to_string(e) + "]";
    std::vector<double> v = mean_hidden(model, base, r.experts[e].positive, what + ".positive_prompts");
    if (!r.experts[e].negative.empty()) {
      const std::vector<double> neg = mean_hidden(model, base, r.experts[e].negative, what + ".negative_prompts");
      for (size_t i = 0; i < v.size(); ++i) v[i] -= neg[i];
    }
    for (size_t l = 0; l < L; ++l) put(l, e, v.data() + l * d);
  }
  normalize_rows(rows, d);
  return out;
}

}  // namespace moe::merge
