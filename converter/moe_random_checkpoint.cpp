// moe_random_checkpoint: a checkpoint directory of deterministic random weights for a
// config key, in the layout its family uses (llama: Hugging Face Mixtral; classic:
// makeMoE) or in another Hugging Face family's (--model-type), as f32, f16 or bf16,
// in one file or sharded as the Hub does. The benchmarks' models and the fuzzers' seeds
// come from it: no large files are committed, and the same key and seed give the same
// bytes everywhere.
//
//   moe_random_checkpoint --config llama-d256-l8-h8-kv4-hd32-e8-k2-f512-v65-c512 --out bench-s [--seed 1]
//   moe_random_checkpoint --model-type olmoe --dtype bf16 --shard-mb 4000
//       --config llama-d2048-l16-h16-kv16-hd128-e64-k8-f1024-v50304-c4096-qkw --out olmoe-1b-7b
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
  std::string chars, model_type, dtype = "f32";
  uint64_t shard_mb = 0;
  app.add_option("--config", key,
                 "config key, e.g. llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128 (moe_convert prints them)")
      ->required();
  app.add_option("--out", out, "checkpoint directory to write (created if needed)")->required();
  app.add_option("--seed", seed, "weights seed")->capture_default_str();
  app.add_option("--chars", chars,
                 "a char vocabulary (UTF-8, one character per token, vocab_size of them); default: a token-id model");
  app.add_option("--model-type", model_type,
                 "the checkpoint layout, as config.json's model_type (default: mixtral for llama keys, makemoe for "
                 "classic ones)")
      ->check(CLI::IsMember({"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe", "makemoe"}));
  app.add_option("--dtype", dtype, "tensor dtype in the safetensors files")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  app.add_option("--shard-mb", shard_mb,
                 "split the tensors into shards of at most this many MB (model-0000N-of-0000M.safetensors + "
                 "model.safetensors.index.json); 0: one file")
      ->capture_default_str();
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
    moe::converter::RandomCheckpointOptions options;
    options.layout = model_type.empty() ? &moe::converter::layout_for(config.family)
                                        : moe::converter::layout_for_model_type(model_type);
    options.dtype = dtype == "bf16" ? "BF16" : dtype == "f16" ? "F16" : "F32";
    options.shard_bytes = shard_mb * 1000000ull;
    moe::converter::write_random_checkpoint(out, config, seed, moe::converter::chars_from_utf8(chars, "--chars"),
                                            options);
    std::printf("%s: random %s checkpoint of %s (seed %llu)\n", out.c_str(), options.layout->name, key.c_str(),
                static_cast<unsigned long long>(seed));
    return 0;
  } catch (const moe::InputError& e) {
    std::fprintf(stderr, "moe_random_checkpoint: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // std::bad_alloc and the like: a message, not an abort
    std::fprintf(stderr, "moe_random_checkpoint: unexpected error: %s\n", e.what());
    return 1;
  }
}
