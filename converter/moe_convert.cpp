// moe_convert: checkpoint directory -> .moe file.
//
//   moe_convert tests/fixtures/makemoe-tiny -o tiny.moe                 # int4 experts (the default)
//   moe_convert ckpt/ -o m.moe --experts fp16 --attention fp32 --group-size 0
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>

#include "converter/input_file.hpp"
#include "converter/atomic_file.hpp"
#include "converter/input_error.hpp"
#include "converter/converter.hpp"
#include "platform/cpu_cores.hpp"
#include "platform/thread_pool.hpp"
#include "tools/cli_support.hpp"
#include "tools/compiled_models.hpp"

int main(int argc, char** argv) {
  const moe::converter::RecordInputs record_inputs;  // no output may replace what this run reads
  CLI::App app{"moe_convert: convert a Hugging Face Mixtral or makeMoE checkpoint directory to a .moe model"};
  std::string input, output, experts = "int4", attention = "int8", embeddings = "int8";
  moe::converter::ConvertOptions options;
  bool quiet = false;
  app.add_option("checkpoint", input, "checkpoint directory (config.json + model.safetensors)")->required();
  app.add_option("-o,--output", output, "output .moe file (written atomically)")->required();
  app.add_option("--experts", experts, "expert weights: int4 | int8 | fp16 | fp32 (int4: blocks of 32, f16 scales)")
      ->capture_default_str();
  app.add_option("--attention", attention, "attention projections: int4 | int8 | fp16 | fp32")->capture_default_str();
  app.add_option("--embeddings", embeddings, "token/position embeddings and lm_head: int4 | int8 | fp16 | fp32")
      ->capture_default_str();
  app.add_option("--group-size", options.recipe.group_size, "int8: columns per scale (0 = one scale per row)")
      ->check(moe::tools::in_range(0, 1 << 22))
      ->capture_default_str();
  app.add_option("--max-context", options.max_context, "shorten the context (KV cache) of a llama-family model")
      ->check(moe::tools::in_range(1, 1 << 22));
  app.add_option("--capacity-factor", options.capacity_factor,
                 "makeMoE expert capacity to record (default: the checkpoint's; 0 = none: the engine reuses its KV "
                 "cache until the "
                 "position table is full, but the model no longer computes what it was trained to)")
      ->check(moe::tools::in_range(0, 1e6));
  int threads = std::min(moe::platform::physical_cores(), moe::platform::ThreadPool::kMaxThreads);
  app.add_option("--threads", threads,
                 "threads that quantize int8 and int4 tensors (default: the physical cores this process may use)")
      ->check(moe::tools::in_range(1, moe::platform::ThreadPool::kMaxThreads))
      ->capture_default_str();
  app.add_flag("-q,--quiet", quiet, "print nothing but errors");
  if (const int code = moe::tools::parse_command_line(app, argc, argv); code >= 0) return code;
  try {
    options.recipe.experts = moe::converter::parse_dtype(experts, "--experts");
    options.recipe.attention = moe::converter::parse_dtype(attention, "--attention");
    options.recipe.embeddings = moe::converter::parse_dtype(embeddings, "--embeddings");
    moe::platform::ThreadPool pool(threads, 4);  // 4 parts a thread: a busy core's are taken by the others
    options.workers = pool.workers();
    const moe::converter::Conversion c = moe::converter::convert_to_file(input, options, output);
    if (!quiet) {
      const moe::ConfigKey key(c.config);
      std::printf("%s (%s) -> %s\n", input.c_str(), c.source_format.c_str(), output.c_str());
      std::printf("config  %s%s\n", key.c_str(),
                  moe::tools::is_compiled(c.config) ? "" : "  (not compiled into moe_infer: see below)");
      std::printf("recipe  %s (norms, biases, router: f32)\n", c.recipe.c_str());
      std::printf("tokenizer  %s\n", c.tokenizer.c_str());
      if (c.capacity_factor > 0.)
        std::printf("expert capacity factor %g: each token re-encodes its window, exactly as makeMoE computes it\n",
                    c.capacity_factor);
      std::printf("\n");
      std::fputs(moe::converter::format_report(c).c_str(), stdout);
      for (const std::string& note : c.notes) std::printf("note: %s\n", note.c_str());
      if (!moe::tools::is_compiled(c.config))
        std::fputs(moe::tools::missing_config_message("note", output.c_str(), c.config).c_str(), stdout);
    }
    return 0;
  } catch (const moe::InputError& e) {
    std::fprintf(stderr, "moe_convert: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe_convert: unexpected error: %s\n", e.what());
    return 1;
  }
}
