// Held-out loss of checkpoints on text files, and where their routers send each text's
// tokens: the measurements behind the merging table in README (bench/merge_shakespeare.sh
// runs it). Checkpoints of any config (the trainer's runtime-sized forward pass).
//
//   merge_eval --text q0=data/q0.heldout.txt --text q1=... --model base=runs/base --model moe=runs/moe [--routing]
//
// Loss: mean next-token cross-entropy (nats) over consecutive windows of the model's
// context length covering each file (characters outside the vocabulary are skipped and
// counted). Routing (--routing, MoE models): for each text, the share of (token, layer)
// first choices that go to expert e, and the share of windows whose most chosen expert
// is e.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>

#include "converter/checkpoint.hpp"
#include "converter/checkpoint_writer.hpp"
#include "converter/input_error.hpp"
#include "trainer/checkpoint_io.hpp"
#include "trainer/model.hpp"

namespace {

using namespace moe;

std::pair<std::string, std::string> named(const std::string& arg) {
  const size_t eq = arg.find('=');
  if (eq == std::string::npos) return {std::filesystem::path(arg).filename().string(), arg};
  return {arg.substr(0, eq), arg.substr(eq + 1)};
}

struct TextResult {
  double loss = 0;
  long skipped = 0;
  std::vector<double> first_choice_share;  // [expert] of token-layer choices
  std::vector<double> window_majority;     // [expert] share of windows whose most chosen expert it is
};

TextResult evaluate(train::Model<float>& model, const converter::Checkpoint& ck, const std::string& text, int batch) {
  const ModelConfig& c = ck.config;
  const std::vector<uint32_t> cps = converter::chars_from_utf8(text, "text");
  std::vector<int32_t> ids;
  TextResult r;
  for (uint32_t cp : cps) {
    const auto it = std::find(ck.chars.begin(), ck.chars.end(), cp);
    if (it == ck.chars.end()) ++r.skipped;
    else ids.push_back(static_cast<int32_t>(it - ck.chars.begin()));
  }
  const int T = c.max_context;
  const long windows = (static_cast<long>(ids.size()) - 1) / T;
  if (windows < 1) throw InputError("a text is shorter than one context window");
  std::vector<int32_t> in(static_cast<size_t>(batch * T)), tg(in.size());
  const size_t E = static_cast<size_t>(c.n_experts);
  std::vector<double> routed(E, 0.0), majority(E, 0.0);
  double total = 0;
  long tokens = 0;
  for (long w0 = 0; w0 < windows; w0 += batch) {
    const int B = static_cast<int>(std::min<long>(batch, windows - w0));
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) {
        const size_t at = static_cast<size_t>((w0 + b) * T + t);
        in[static_cast<size_t>(b * T + t)] = ids[at];
        tg[static_cast<size_t>(b * T + t)] = ids[at + 1];
      }
    model.forward(in.data(), tg.data(), B, T, false, 0);
    total += model.stats().ce * B * T;
    tokens += static_cast<long>(B) * T;
    for (int b = 0; b < B; ++b) {
      std::vector<long> votes(E, 0);
      for (int l = 0; l < c.n_layers; ++l)
        for (int t = 0; t < T; ++t) ++votes[static_cast<size_t>(model.first_choice(l, b * T + t))];
      for (size_t e = 0; e < E; ++e) routed[e] += static_cast<double>(votes[e]);
      majority[static_cast<size_t>(std::max_element(votes.begin(), votes.end()) - votes.begin())] += 1;
    }
  }
  r.loss = total / static_cast<double>(tokens);
  for (double& v : routed) v /= static_cast<double>(tokens) * c.n_layers;
  for (double& v : majority) v /= static_cast<double>(windows);
  r.first_choice_share = routed;
  r.window_majority = majority;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"merge_eval: held-out loss and routing of checkpoints on text files"};
  std::vector<std::string> texts, models;
  bool routing = false;
  int threads = 2;
  app.add_option("--text", texts, "NAME=FILE: held-out text (repeat)")->required();
  app.add_option("--model", models, "NAME=DIR: checkpoint directory (repeat)")->required();
  app.add_flag("--routing", routing, "also print where MoE models route each text's tokens");
  app.add_option("--threads", threads, "OpenMP threads")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  omp_set_num_threads(threads);
  try {
    std::vector<std::pair<std::string, std::string>> text_bodies;
    for (const std::string& t : texts) {
      const auto [name, path] = named(t);
      std::ifstream f(path, std::ios::binary);
      if (!f) throw InputError("cannot read '" + path + "'");
      text_bodies.emplace_back(name, std::string(std::istreambuf_iterator<char>(f), {}));
    }
    std::printf("| model | config |");
    for (const auto& [name, body] : text_bodies) std::printf(" %s |", name.c_str());
    std::printf(" mean |\n|---|---|");
    for (size_t i = 0; i <= text_bodies.size(); ++i) std::printf("---:|");
    std::printf("\n");
    std::vector<std::string> routing_lines;
    for (const std::string& m : models) {
      const auto [name, dir] = named(m);
      const converter::Checkpoint ck = converter::open_checkpoint(dir);
      train::Model<float> model(train::inference_config(ck), 16);
      train::import_model(dir, model);
      std::printf("| %s | %s |", name.c_str(), ConfigKey(ck.config).c_str());
      double mean = 0;
      std::vector<TextResult> results;
      for (const auto& [tname, body] : text_bodies) {
        results.push_back(evaluate(model, ck, body, 16));
        if (results.back().skipped > 0)
          std::fprintf(stderr, "merge_eval: %s: %ld characters of %s are not in the vocabulary (skipped)\n",
                       name.c_str(), results.back().skipped, tname.c_str());
        std::printf(" %.4f |", results.back().loss);
        mean += results.back().loss / static_cast<double>(text_bodies.size());
      }
      std::printf(" %.4f |\n", mean);
      std::fflush(stdout);
      if (routing && ck.config.n_experts > 1) {
        const auto table = [&](const char* title, std::vector<double> TextResult::*field) {
          std::string block = "\nrouting of " + name + ": " + title + "\n| text |";
          for (int e = 0; e < ck.config.n_experts; ++e) block += " e" + std::to_string(e) + " |";
          block += "\n|---|";
          for (int e = 0; e < ck.config.n_experts; ++e) block += "---:|";
          block += "\n";
          for (size_t t = 0; t < text_bodies.size(); ++t) {
            block += "| " + text_bodies[t].first + " |";
            for (double s : results[t].*field) {
              char buf[32];
              std::snprintf(buf, sizeof buf, " %.1f%% |", 100 * s);
              block += buf;
            }
            block += "\n";
          }
          routing_lines.push_back(block);
        };
        table("share of tokens whose first-choice expert is e (all layers)", &TextResult::first_choice_share);
        table("share of windows whose most chosen expert (over tokens and layers) is e", &TextResult::window_majority);
      }
    }
    for (const std::string& b : routing_lines) std::printf("%s", b.c_str());
    return 0;
  } catch (const InputError& e) {
    std::fprintf(stderr, "merge_eval: %s\n", e.what());
    return 1;
  }
}
