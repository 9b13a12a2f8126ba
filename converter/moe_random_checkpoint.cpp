// moe_random_checkpoint: a checkpoint directory of deterministic random weights for a
// config key, in the layout its family uses (llama: Hugging Face Mixtral; classic:
// makeMoE). The benchmarks' models and the fuzzers' seeds come from it: no large files
// are committed, and the same key and seed give the same bytes everywhere.
//
//   moe_random_checkpoint --config llama-d256-l8-h8-kv4-hd32-e8-k2-f512-v65-c512 --out bench-s [--seed 1]
#include <CLI/CLI.hpp>
#include <cstdio>

#include "converter/input_file.hpp"
#include "converter/checkpoint_writer.hpp"
#include "converter/input_error.hpp"
#include "tools/cli_support.hpp"

int main(int argc, char** argv) {
  const moe::converter::RecordInputs record_inputs;  // no output may replace what this run reads
  CLI::App app{"moe_random_checkpoint: write a checkpoint of deterministic random weights for a model config"};
  std::string key, out;
  uint64_t seed = 1;
  std::string chars;
  app.add_option("--config", key,
                 "config key, e.g. llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128 (moe_convert prints them)")
      ->required();
  app.add_option("--out", out, "checkpoint directory to write (created if needed)")->required();
  app.add_option("--seed", seed, "weights seed")->capture_default_str();
  app.add_option("--chars", chars,
                 "a char vocabulary (UTF-8, one character per token, vocab_size of them); default: a token-id model");
  if (const int code = moe::tools::parse_command_line(app, argc, argv); code >= 0) return code;
  moe::ModelConfig config;
  if (!moe::try_parse_config_key(key.c_str(), config)) {
    std::fprintf(stderr, "moe_random_checkpoint: '%s' is not a config key (format: engine/moe/config.hpp)\n",
                 key.c_str());
    return 2;
  }
  if (const char* why = moe::config_problem(config)) {
    std::fprintf(stderr, "moe_random_checkpoint: config %s is not supported: %s\n", key.c_str(), why);
    return 2;
  }
  try {
    moe::converter::write_random_checkpoint(out, config, seed, moe::converter::chars_from_utf8(chars, "--chars"));
    std::printf("%s: random %s checkpoint of %s (seed %llu)\n", out.c_str(),
                moe::converter::layout_for(config.family).name, key.c_str(), static_cast<unsigned long long>(seed));
    return 0;
  } catch (const moe::InputError& e) {
    std::fprintf(stderr, "moe_random_checkpoint: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // std::bad_alloc and the like: a message, not an abort
    std::fprintf(stderr, "moe_random_checkpoint: unexpected error: %s\n", e.what());
    return 1;
  }
}
