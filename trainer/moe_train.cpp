// moe_train: train a sparse Mixture-of-Experts language model on a text file.
//
//   moe_train --data data/tinyshakespeare.txt --out runs/shakespeare            # makeMoE recipe
//   moe_train --data data/tinyshakespeare.txt --out runs/quick --preset quick    # a few minutes
//   moe_train --out runs/shakespeare --resume                                   # continue
//
// The output directory receives the model as a checkpoint (config.json,
// model.safetensors, tokenizer.json: moe_convert reads it directly), train_state.bin
// (for --resume), metrics.csv, evals.csv, expert_load.csv and loss.svg.
#include <omp.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "converter/input_file.hpp"
#include "converter/checkpoint.hpp"
#include "converter/input_error.hpp"
#include "trainer/checkpoint_io.hpp"
#include "trainer/data.hpp"
#include "trainer/model.hpp"
#include "trainer/optimizer.hpp"
#include "trainer/report.hpp"
#include "tools/cli_support.hpp"

namespace {
// Ctrl-C or a polite kill: the step in progress finishes, then the run saves its state,
// its model and its reports, and exits 130 (SIGINT) or 143 (SIGTERM).
volatile sig_atomic_t stop_signal = 0;
void on_stop_signal(int sig) { stop_signal = sig; }

using namespace moe;
using namespace moe::train;
using Clock = std::chrono::steady_clock;
using moe::tools::grouped;

std::string duration(double seconds) {
  char buf[32];
  const long s = static_cast<long>(seconds + 0.5);
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

// Mean loss over the evaluation batches of one split, in eval mode (no dropout, no
// router noise). The batches are the same at every evaluation, so the curve is smooth.
struct Evaluation {
  double loss = 0;
  std::vector<std::vector<double>> load;  // [layer][expert] share of routed choices
  double dropped = 0;                     // share of routed choices over capacity
};

Evaluation evaluate(Model<float>& model, const std::vector<int32_t>& data, const TrainConfig& c, uint64_t split) {
  const int B = c.batch, T = c.model.max_context;
  std::vector<int32_t> in(static_cast<size_t>(B * T)), tg(in.size());
  Evaluation ev;
  ev.load.assign(static_cast<size_t>(c.model.n_layers),
                 std::vector<double>(static_cast<size_t>(c.model.n_experts), 0.0));
  long routed = 0, kept = 0;
  const CounterRng rng(c.seed, Stream::eval_batch, split);
  for (int i = 0; i < c.eval_batches; ++i) {
    sample_batch(data, rng, static_cast<uint64_t>(i) * static_cast<uint64_t>(B), B, T, in.data(), tg.data());
    model.forward(in.data(), tg.data(), B, T, false, 0);
    ev.loss += model.stats().ce;
    for (int l = 0; l < c.model.n_layers; ++l)
      for (int e = 0; e < c.model.n_experts; ++e) {
        const long r = model.stats().routed[static_cast<size_t>(l)][static_cast<size_t>(e)];
        ev.load[static_cast<size_t>(l)][static_cast<size_t>(e)] += static_cast<double>(r);
        routed += r;
        kept += model.stats().kept[static_cast<size_t>(l)][static_cast<size_t>(e)];
      }
  }
  ev.loss /= c.eval_batches;
  for (auto& layer : ev.load) {
    double total = 0;
    for (double v : layer) total += v;
    for (double& v : layer) v /= total;
  }
  ev.dropped = routed ? 1.0 - static_cast<double>(kept) / static_cast<double>(routed) : 0.0;
  return ev;
}

}  // namespace

int main(int argc, char** argv) {
  const moe::converter::RecordInputs record_inputs;  // no output may replace what this run reads
  CLI::App app{"moe_train: train a Mixture-of-Experts language model (C++, hand-written backward)"};
  std::string data = "data/tinyshakespeare.txt", out, preset_name = "makemoe", init_from, family;
  bool resume = false;
  int threads = 2;
  TrainConfig o;  // holders for the overriding flags
  int d = 0, layers = 0, heads = 0, kv_heads = 0, experts = 0, top_k = 0, ffn = 0, block = 0;
  std::string aux, schedule;
  app.add_option("--data", data, "UTF-8 text to train on (90% train / 10% validation)")->capture_default_str();
  app.add_option("--out", out, "output directory (checkpoint, logs, loss curve)")->required();
  app.add_option("--preset", preset_name, std::string("starting recipe: ") + preset_names())->capture_default_str();
  app.add_flag("--resume", resume, "continue the run saved in --out (bit-exact: same losses as an uninterrupted run)");
  app.add_option("--init-from", init_from, "start from the weights of a checkpoint directory of the same config");
  app.add_option("--threads", threads, "OpenMP threads, 1..256 (results do not depend on it)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  // Model and recipe overrides (not allowed with --resume).
  std::vector<CLI::Option*> model_flags = {
      app.add_option("--family", family, "classic (makeMoE) | llama (Mixtral)"),
      app.add_option("--d-model", d, "embedding width"),
      app.add_option("--layers", layers, "transformer blocks"),
      app.add_option("--heads", heads, "attention heads"),
      app.add_option("--kv-heads", kv_heads, "key/value heads (llama; grouped-query attention)"),
      app.add_option("--experts", experts, "experts per MoE layer"),
      app.add_option("--top-k", top_k, "experts per token (1 = Switch, 2 = GShard, = experts: dense soft gating)"),
      app.add_option("--expert-hidden", ffn, "expert hidden width (default 4 x d-model)"),
      app.add_option("--block", block, "context length (block size)"),
      app.add_option("--batch", o.batch, "sequences per step"),
      app.add_option("--dropout", o.dropout, "dropout probability"),
      app.add_option("--router-noise", o.router_noise, "noisy top-k gating during training (true/false)"),
      app.add_option("--capacity-factor", o.constants.capacity_factor,
                     "expert capacity = tokens*k/E * factor; 0 = unlimited"),
      app.add_option("--aux-loss", aux, "load balancing: none | switch | cv"),
      app.add_option("--aux-coef", o.aux_coef, "load-balancing loss coefficient"),
      app.add_option("--z-loss", o.z_loss_coef, "router z-loss coefficient (0 = off)"),
      app.add_option("--lr", o.lr, "peak learning rate"),
      app.add_option("--min-lr", o.min_lr, "cosine schedule floor"),
      app.add_option("--warmup", o.warmup, "linear warmup steps"),
      app.add_option("--schedule", schedule, "constant | cosine"),
      app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay"),
      app.add_option("--decay-everything", o.decay_everything,
                     "decay every parameter (makeMoE) or only non-embedding matrices"),
      app.add_option("--grad-clip", o.grad_clip, "clip the gradient's global norm (0 = off)"),
      app.add_option("--seed", o.seed, "random seed (init, batches, dropout, noise)"),
      app.add_option("--eval-batches", o.eval_batches, "batches per evaluation"),
  };
  // Bookkeeping: may change on --resume.
  auto* steps_opt = app.add_option("--steps", o.steps, "training steps");
  auto* eval_opt = app.add_option("--eval-interval", o.eval_interval, "evaluate every N steps");
  auto* ckpt_opt = app.add_option("--checkpoint-interval", o.checkpoint_interval, "save train_state.bin every N steps");
  auto* log_opt = app.add_option("--log-interval", o.log_interval, "print progress every N steps");
  if (const int code = moe::tools::parse_command_line(app, argc, argv); code >= 0) return code;

  try {
    const std::filesystem::path dir(out);
    const std::filesystem::path state_path = dir / "train_state.bin";
    TrainConfig c;
    std::vector<uint32_t> vocab;
    TrainState state;
    if (resume) {
      for (CLI::Option* f : model_flags)
        if (f->count() > 0)
          throw InputError(f->get_name() +
                           " cannot change on --resume: the run continues with the settings it was started with");
      state = load_train_state(state_path);
      c = state.config;
      vocab = state.vocab;
    } else {
      c = preset(preset_name);
      auto given = [&](const char* name) { return app.get_option(name)->count() > 0; };
      if (given("--family")) {
        if (family != "classic" && family != "llama") throw InputError("--family must be classic or llama");
        c.model.family = family == "classic" ? Family::classic : Family::llama;
        c.constants.attention_scale = c.model.family == Family::classic ? AttentionScaleRule::inv_sqrt_model_dim
                                                                        : AttentionScaleRule::inv_sqrt_head_dim;
      }
      if (given("--d-model")) c.model.d_model = d, c.model.expert_hidden = 4 * d;
      if (given("--layers")) c.model.n_layers = layers;
      if (given("--heads")) c.model.n_heads = heads;
      if (given("--kv-heads")) c.model.n_kv_heads = kv_heads;
      else if (c.model.family == Family::classic || c.model.n_heads % c.model.n_kv_heads != 0)
        c.model.n_kv_heads = c.model.n_heads;
      if (c.model.n_heads > 0 && c.model.d_model % c.model.n_heads != 0)
        throw InputError("--d-model " + std::to_string(c.model.d_model) + " is not divisible by --heads " +
                         std::to_string(c.model.n_heads));
      c.model.head_dim = c.model.n_heads > 0 ? c.model.d_model / c.model.n_heads : 0;
      if (given("--experts")) c.model.n_experts = experts;
      if (given("--top-k")) c.model.top_k = top_k;
      if (given("--expert-hidden")) c.model.expert_hidden = ffn;
      if (given("--block")) c.model.max_context = block;
      if (given("--batch")) c.batch = o.batch;
      if (given("--dropout")) c.dropout = o.dropout;
      if (given("--router-noise")) c.router_noise = o.router_noise;
      if (given("--capacity-factor")) c.constants.capacity_factor = o.constants.capacity_factor;
      if (given("--aux-loss"))
        c.aux_loss = aux == "switch" ? AuxLoss::switch_transformer
                     : aux == "cv"   ? AuxLoss::cv_squared
                     : aux == "none" ? AuxLoss::none
                                     : throw InputError("--aux-loss must be none, switch or cv");
      if (given("--aux-coef")) c.aux_coef = o.aux_coef;
      if (given("--z-loss")) c.z_loss_coef = o.z_loss_coef;
      if (given("--lr")) c.lr = o.lr;
      if (given("--min-lr")) c.min_lr = o.min_lr;
      if (given("--warmup")) c.warmup = o.warmup;
      if (given("--schedule"))
        c.schedule = schedule == "cosine"     ? Schedule::cosine
                     : schedule == "constant" ? Schedule::constant
                                              : throw InputError("--schedule must be constant or cosine");
      if (given("--weight-decay")) c.weight_decay = o.weight_decay;
      if (given("--decay-everything")) c.decay_everything = o.decay_everything;
      if (given("--grad-clip")) c.grad_clip = o.grad_clip;
      if (given("--seed")) c.seed = o.seed;
      if (given("--eval-batches")) c.eval_batches = o.eval_batches;
    }
    if (steps_opt->count()) c.steps = o.steps;
    if (eval_opt->count()) c.eval_interval = o.eval_interval;
    if (ckpt_opt->count()) c.checkpoint_interval = o.checkpoint_interval;
    if (log_opt->count()) c.log_interval = o.log_interval;

    // Continuing from weights (--resume, --init-from) keeps their vocabulary: the corpus
    // must not bring characters the embedding table has no row for.
    if (!resume && !init_from.empty()) {
      vocab = converter::open_checkpoint(init_from).chars;
      if (vocab.empty()) throw InputError("--init-from '" + init_from + "' has no char tokenizer.json");
    }
    const Corpus corpus = load_corpus(data, vocab.empty() ? nullptr : &vocab);
    vocab = corpus.vocab;
    c.model.vocab_size = static_cast<int>(vocab.size());
    if (const std::string why = c.problem(); !why.empty()) throw InputError("cannot train this config: " + why);
    if (static_cast<long>(corpus.val.size()) <= c.model.max_context + 1)
      throw InputError("the validation split (" + std::to_string(corpus.val.size()) +
                       " characters) is shorter than one block");
    std::filesystem::create_directories(dir);
    omp_set_num_threads(threads);

    Model<float> model(c, c.batch);
    AdamW opt(c, model.num_params(), decayed_prefix(model.table(), c.decay_everything));
    int start = 0;
    if (resume) {
      model.params = state.params;
      opt.m = state.m;
      opt.v = state.v;
      start = state.step;
    } else if (!init_from.empty()) {
      import_model(init_from, model);
    } else {
      model.init_params(c.seed);
    }
    const int B = c.batch, T = c.model.max_context;
    std::printf("moe_train: %s | %s parameters (%s active per token) | %d x %d tokens per step | %s steps\n",
                ConfigKey(c.model).c_str(), grouped(model.num_params()).c_str(),
                grouped(active_params_per_token(c.model)).c_str(), B, T, grouped(c.steps).c_str());
    std::printf("data: %s (%s train / %s validation characters, vocabulary %zu) | threads %d%s\n", data.c_str(),
                grouped(static_cast<long long>(corpus.train.size())).c_str(),
                grouped(static_cast<long long>(corpus.val.size())).c_str(), vocab.size(), threads,
                resume ? (" | resuming at step " + std::to_string(start)).c_str() : "");
    std::fflush(stdout);

    CsvLog metrics(dir / "metrics.csv", "step,lr,loss,cross_entropy,aux_loss,z_loss,grad_norm,ms_per_step,tokens_per_s",
                   resume ? start : -1);
    CsvLog evals(dir / "evals.csv", "step,train_loss,val_loss,dropped_fraction", resume ? start : -1);
    CsvLog loads(dir / "expert_load.csv", "step,layer,expert,share_of_routed", resume ? start : -1);
    std::vector<int32_t> in(static_cast<size_t>(B * T)), tg(in.size());
    const CounterRng batch_rng(c.seed, Stream::batch);
    int last_saved = start;
    double window_ms = 0;
    int window_steps = 0;
    const auto t_run = Clock::now();
    struct sigaction stop {};
    stop.sa_handler = on_stop_signal;
    sigaction(SIGINT, &stop, nullptr);
    sigaction(SIGTERM, &stop, nullptr);
    // What to say when the run must stop: where the last good state is, if there is one.
    const auto last_good = [&](int saved) {
      return saved > 0 && std::filesystem::exists(state_path)
                 ? "The last good state is " + state_path.string() + " (step " + std::to_string(saved) +
                       "): lower --lr or set --grad-clip, then --resume."
                 : std::string("No state was saved yet: lower --lr or set --grad-clip and start again.");
    };
    // The state and the model after step `done`, unless a diverging update left infinite
    // weights before the loss showed it: such a state must not replace the last good one.
    const auto save_checkpoint = [&](int done) {
      if (!std::all_of(model.params.begin(), model.params.end(), [](float v) { return std::isfinite(v); })) {
        std::fprintf(stderr, "moe_train: the weights became infinite or NaN at step %d: stopping. %s\n", done,
                     last_good(last_saved).c_str());
        return false;
      }
      // The model first, the state last: train_state.bin is what --resume continues from, so
      // a kill or a failed write between the two must leave the older state, which reruns
      // the steps and rewrites the model. The other order could leave a final state beside
      // an older model, and a resume would find nothing left to do.
      export_model(dir, c, vocab, model.table(), model.params);
      save_train_state(state_path, TrainState{c, vocab, done, model.params, opt.m, opt.v});
      last_saved = done;
      return true;
    };
    const auto write_curve = [&] {
      write_loss_svg(dir / "loss.svg", "moe_train " + std::string(ConfigKey(c.model).c_str()),
                     read_csv_column(dir / "metrics.csv", 3), read_csv_column(dir / "evals.csv", 1),
                     read_csv_column(dir / "evals.csv", 2));
    };
    for (int step = start; step < c.steps; ++step) {
      const auto t0 = Clock::now();
      sample_batch(corpus.train, batch_rng, static_cast<uint64_t>(step) * static_cast<uint64_t>(B), B, T, in.data(),
                   tg.data());
      const double loss = model.forward(in.data(), tg.data(), B, T, true, static_cast<uint64_t>(step));
      if (!std::isfinite(loss)) {
        std::fprintf(stderr, "moe_train: the loss became %g at step %d: stopping. %s\n", loss, step,
                     last_good(last_saved).c_str());
        return 1;
      }
      model.backward();
      const double grad_norm = opt.update(model.params, model.grads, step);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      window_ms += ms;
      ++window_steps;
      const ForwardStats& s = model.stats();
      char row[256];
      std::snprintf(row, sizeof row, "%d,%.6g,%.6f,%.6f,%.6f,%.6f,%.5g,%.2f,%.0f", step + 1,
                    static_cast<double>(opt.learning_rate(step)), loss, s.ce, s.aux, s.z, grad_norm, ms,
                    B * T / ms * 1e3);
      metrics.row(row);
      const int done = step + 1;
      if (done % c.log_interval == 0 || done == c.steps) {
        const double avg = window_ms / window_steps;
        std::printf("step %5d/%d | loss %.4f | lr %.2e | %.1f ms/step | %s tok/s | ETA %s\n", done, c.steps, loss,
                    static_cast<double>(opt.learning_rate(step)), avg,
                    grouped(static_cast<long long>(B * T / avg * 1e3)).c_str(),
                    duration(avg * (c.steps - done) / 1e3).c_str());
        std::fflush(stdout);
        window_ms = 0;
        window_steps = 0;
      }
      if (done % c.eval_interval == 0 || done == c.steps) {
        const Evaluation tr = evaluate(model, corpus.train, c, 0), va = evaluate(model, corpus.val, c, 1);
        std::printf("eval %5d | train %.4f | val %.4f | routed choices over capacity %.1f%%\n", done, tr.loss, va.loss,
                    100 * va.dropped);
        char line[128];
        std::snprintf(line, sizeof line, "%d,%.6f,%.6f,%.6f", done, tr.loss, va.loss, va.dropped);
        evals.row(line);
        for (int l = 0; l < c.model.n_layers; ++l) {
          std::string shares;
          for (int e = 0; e < c.model.n_experts; ++e) {
            const double v = va.load[static_cast<size_t>(l)][static_cast<size_t>(e)];
            std::snprintf(line, sizeof line, "%d,%d,%d,%.5f", done, l, e, v);
            loads.row(line);
            std::snprintf(line, sizeof line, " %4.1f", 100 * v);
            shares += line;
          }
          std::printf("    expert load layer %d (%%):%s\n", l, shares.c_str());
        }
        std::fflush(stdout);
      }
      if ((done % c.checkpoint_interval == 0 || done == c.steps) && !save_checkpoint(done)) return 1;
      if (stop_signal != 0 && done < c.steps) {
        if (last_saved != done && !save_checkpoint(done)) return 1;
        write_curve();
        std::printf(
            "interrupted after step %d of %d: state, model and reports saved in %s\n"
            "resume with: moe_train --out %s --resume\n",
            done, c.steps, dir.c_str(), dir.c_str());
        std::fflush(stdout);
        return stop_signal == SIGINT ? 130 : 143;
      }
    }
    write_curve();
    std::printf("done in %s: model in %s (convert: moe_convert %s -o model.moe), curve in %s\n",
                duration(std::chrono::duration<double>(Clock::now() - t_run).count()).c_str(), dir.c_str(), dir.c_str(),
                (dir / "loss.svg").c_str());
    return 0;
  } catch (const InputError& e) {
    std::fprintf(stderr, "moe_train: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe_train: %s\n", e.what());
    return 1;
  }
}
