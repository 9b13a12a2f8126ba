// moe_infer: generate text (or token ids) from a .moe model.
//
//   moe_infer --model m.moe --prompt "ROMEO:" -n 200 --temp 0.8 --top-p 0.9 --seed 1
//   moe_infer --model qwen.moe --chat --prompt-file question.txt      (or -p - : the prompt from stdin)
//   moe_infer --model tiny.moe --ids 1,2,3 -n 24 --temp 0
//   moe_infer --model m.moe --bench [--bench-prompt 64 --bench-tokens 128 --bench-reps 5] [--json out.json]
//   moe_infer ... --threads 2      (weight products split across 2 cores)
//
// Streams tokens to stdout as they are generated; prints a stats line to stderr.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "moe/engine.hpp"
#include "moe/generate.hpp"
#include "moe/model_file.hpp"
#include "moe/sampler.hpp"
#include "platform/cpu_cores.hpp"
#include "platform/mapped_file.hpp"
#include "platform/split_calibration.hpp"
#include "platform/thread_pool.hpp"
#include "moe/text/stream_decoder.hpp"
#include "tools/bench.hpp"
#include "tools/chat_template.hpp"
#include "tools/arg_parser.hpp"
#include "tools/number_format.hpp"
#include "tools/compiled_models.hpp"
#include "tools/output_file.hpp"
#include "tools/token_ids.hpp"

namespace {
// Every write to stdout is checked: a full disk or a closed descriptor is an error, not a
// silent success. (A reader that went away, EPIPE, ends the process by SIGPIPE as usual.)
bool flushed() { return std::fflush(stdout) == 0 && !std::ferror(stdout); }
int write_failed() {
  std::fprintf(stderr, "\nmoe_infer: cannot write the output: %s\n", std::strerror(errno ? errno : EIO));
  return 1;
}

// A llama-family model stops at its context: say how to get a longer one.
void context_hint(int max_context) {
  std::fprintf(stderr,
               "moe_infer: this model was converted with a context of %d tokens; convert it again with "
               "moe_convert --max-context N for more (above the trained length it warns, as transformers runs on)\n",
               max_context);
}

// The model is mapped: if its file is truncated or rewritten in place while we run (cp
// over it), reading a page raises SIGBUS. Say so, instead of dying without a word.
void on_sigbus(int) {
  static const char message[] =
      "\nmoe_infer: the model file changed or shrank while in use (replace a model with mv, not cp; "
      "or run with --load read)\n";
  [[maybe_unused]] const ssize_t n = ::write(2, message, sizeof message - 1);
  ::_exit(1);
}

// moe_infer runs where memory is plentiful: prefill chunks of 64 tokens read each
// weight once per 64 prompt tokens instead of once per 16 (the engine's default, sized
// for microcontrollers), for 4x the activation scratch (bench/README.md, "Design
// decisions").
constexpr int host_prefill_chunk(const moe::ModelConfig& c) { return c.max_context < 64 ? c.max_context : 64; }

struct Options {
  std::string model;
  std::string prompt;
  std::string prompt_file;
  bool chat = false;
  std::string chat_template;  // a format name, overriding the model's
  bool ignore_eos = false;
  std::string ids;
  int n_tokens = 200;
  moe::SamplingParams sampling{0.8f, 0, 0.95f, 1};
  bool stats = true;
  bool echo = true;
  bool verify = true;
  std::string load = "map";  // --load: map or read
  bool no_mmap = false;      // --no-mmap: the older spelling of --load read
  int threads = 1;
  bool int8_activations = true;
  bool bench = false;
  int bench_probe_mib = 512;
  std::string json;         // --bench results as JSON: a path, or "-" for stdout
  std::string logits_out;   // the logits after every prompt token, as JSON
  double load_ms = 0;       // mapping (or reading) and verifying the file
  bool model_read = false;  // read into memory (--load read), not mapped
  moe::tools::BenchOptions bench_options;
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// {"logits": [[...], ...]}: one row per prompt position, each f32 printed with 9
// significant digits, which read back to the same float.
std::string write_logits(const std::string& path, const std::vector<float>& logits, int vocab) {
  std::string text = "{\"logits\": [";
  text.reserve(logits.size() * 16 + 32);
  char num[32];
  for (size_t i = 0; i < logits.size(); ++i) {
    const bool row_start = i % static_cast<size_t>(vocab) == 0;
    if (row_start) text += i == 0 ? "[" : "], [";
    else text += ", ";
    text.append(num, static_cast<size_t>(std::snprintf(num, sizeof num, "%.9g", static_cast<double>(logits[i]))));
  }
  text += "]]}\n";
  return moe::tools::write_output_file(path, text);
}

#if MOE_KV_CACHE_F16
constexpr moe::KvCache kKvCache = moe::KvCache::f16;
#else
constexpr moe::KvCache kKvCache = moe::KvCache::f32;
#endif

template <moe::ModelConfig C>
struct Generate {
  using EngineT = moe::Engine<C, moe::kernels::Best, host_prefill_chunk(C), kKvCache>;
  static int bench(EngineT& engine, const moe::ModelFile& file, const Options& o, moe::platform::ThreadPool& pool,
                   const moe::platform::SplitCalibration& split) {
    moe::tools::BenchOptions b = o.bench_options;
    if (C.family == moe::Family::llama && b.prompt + b.tokens > C.max_context)
      return std::fprintf(stderr,
                          "moe_infer: --bench-prompt %d + --bench-tokens %d exceed the model's context of %d tokens\n",
                          b.prompt, b.tokens, C.max_context),
             2;
    moe::tools::ReadBandwidthProbe probe(pool, static_cast<size_t>(o.bench_probe_mib) << 20);
    b.probe = &probe;
    moe::tools::BenchResult r;
    if (moe::Error e = moe::tools::run_bench(engine, file, b, r))
      return std::fprintf(stderr, "moe_infer: %s\n", e.what()), 1;
    const char* kernels =
#if MOE_SIMD
        moe::kernels::simd::arch_name();
#else
        "scalar";
#endif
    std::printf("config %s | kernels %s | threads %d | model %s B | weights read per token %s B\n",
                moe::ConfigKey(C).c_str(), kernels, o.threads,
                moe::tools::grouped(static_cast<long long>(file.size_bytes())).c_str(),
                moe::tools::grouped(static_cast<long long>(r.bytes_per_token)).c_str());
    std::printf("load %.1f ms (%s, %s) | engine RAM %s B (KV cache %s)\n", o.load_ms,
                o.model_read ? "read into memory" : "mapped",
                o.verify ? "with the CRC-32C check of every weight" : "--no-verify",
                moe::tools::grouped(static_cast<long long>(sizeof(EngineT))).c_str(),
                kKvCache == moe::KvCache::f16 ? "f16" : "f32");
    std::printf("pp%d: %.0f tok/s (min %.0f, max %.0f) | tg%d: %.0f tok/s (min %.0f, max %.0f) | median of %d\n",
                b.prompt, r.prefill_tok_s, r.prefill_min, r.prefill_max, b.tokens, r.decode_tok_s, r.decode_min,
                r.decode_max, b.reps);
    std::printf("as llama-bench: pp%d %.0f tok/s | tg%d %.0f tok/s (min %.0f, max %.0f) from an empty cache\n",
                b.prompt, r.prefill_tok_s, b.tokens, r.tg_empty_tok_s, r.tg_empty_min, r.tg_empty_max);
    if (o.threads > 1)
      std::printf("work split: hand-over %.2f us, one core %.1f GMAC/s: products shared from %s MACs per thread\n",
                  split.handover_s * 1e6, split.macs_per_s / 1e9,
                  moe::tools::grouped(split.min_macs_per_worker).c_str());
    std::printf(
        "read bandwidth (probe, %d thread%s) %.1f GB/s | decode moves %.1f GB/s of weights: %.0f%% of the roofline\n",
        o.threads, o.threads == 1 ? "" : "s", r.bandwidth / 1e9, r.bytes_per_token * r.decode_tok_s / 1e9,
        100 * r.roofline_fraction);
    if (b.paired_reps > 0)
      std::printf(
          "paired with the probe (%d more tg%d, each against the better of a probe pass just before and after "
          "it): %.1f GB/s | %.0f%% of the roofline (min %.0f%%, max %.0f%%)\n",
          b.paired_reps, b.tokens, r.paired_bandwidth / 1e9, 100 * r.paired_fraction, 100 * r.paired_fraction_min,
          100 * r.paired_fraction_max);
    if (r.bandwidth > 0) {
      char paired[32] = "";
      if (b.paired_reps > 0) std::snprintf(paired, sizeof paired, ", paired %.0f%%", 100 * r.paired_fraction_with_kv);
      std::printf("with the KV cache (%s B more a token at positions %d-%d): %.0f%% of the roofline%s\n",
                  moe::tools::grouped(static_cast<long long>(r.kv_bytes_per_token)).c_str(), b.prompt,
                  b.prompt + b.tokens - 1, 100 * r.roofline_fraction_with_kv, paired);
    }
    if (!o.json.empty()) {
      char buf[2048];
      std::snprintf(
          buf, sizeof buf,
          "{\"config\": \"%s\", \"kernels\": \"%s\", \"threads\": %d, \"model_bytes\": %zu, "
          "\"weight_bytes_per_token\": %.0f, "
          "\"prompt_tokens\": %d, \"generated_tokens\": %d, \"reps\": %d, \"prefill_tok_s\": %.1f, "
          "\"decode_tok_s\": %.1f, "
          "\"prefill_tok_s_min\": %.1f, \"decode_tok_s_min\": %.1f, \"read_bandwidth_gb_s\": %.2f, "
          "\"roofline_fraction\": %.4f, \"load_ms\": %.1f, \"engine_bytes\": %zu, \"kv_cache\": \"%s\", "
          "\"pp_tok_s\": %.1f, \"tg_tok_s\": %.1f, \"tg_tok_s_min\": %.1f, \"handover_us\": %.3f, "
          "\"min_macs_per_worker\": %ld, \"load\": \"%s\", \"read_bandwidth_paired_gb_s\": %.2f, "
          "\"roofline_fraction_paired\": %.4f, \"roofline_fraction_paired_min\": %.4f, "
          "\"roofline_fraction_paired_max\": %.4f, \"kv_cache_bytes_per_token\": %.0f, "
          "\"roofline_fraction_with_kv\": %.4f, \"roofline_fraction_paired_with_kv\": %.4f, \"probe_mib\": %d}\n",
          moe::ConfigKey(C).c_str(), kernels, o.threads, file.size_bytes(), r.bytes_per_token, b.prompt, b.tokens,
          b.reps, r.prefill_tok_s, r.decode_tok_s, r.prefill_min, r.decode_min, r.bandwidth / 1e9, r.roofline_fraction,
          o.load_ms, sizeof(EngineT), kKvCache == moe::KvCache::f16 ? "f16" : "f32", r.prefill_tok_s, r.tg_empty_tok_s,
          r.tg_empty_min, split.handover_s * 1e6, split.min_macs_per_worker, o.model_read ? "read" : "map",
          r.paired_bandwidth / 1e9, r.paired_fraction, r.paired_fraction_min, r.paired_fraction_max,
          r.kv_bytes_per_token, r.roofline_fraction_with_kv, r.paired_fraction_with_kv, o.bench_probe_mib);
      if (o.json == "-") {
        std::fputs(buf, stdout);
      } else if (const std::string error = moe::tools::write_output_file(o.json, buf); !error.empty()) {
        return std::fprintf(stderr, "moe_infer: %s\n", error.c_str()), 1;
      }
    }
    return 0;
  }

  static int run(const moe::ModelFile& file, const Options& o) {
    // The engine and sampler are large (KV cache): allocated once here, before any
    // token, as are the worker threads; nothing is allocated while generating.
    moe::platform::ThreadPool pool(o.threads);
    auto engine = std::make_unique<EngineT>();
    moe::platform::SplitCalibration split;  // measured here, on this machine (a millisecond or two)
    if (o.threads > 1) split = moe::platform::calibrate_split(pool);
    engine->set_workers(pool.workers(), split.min_macs_per_worker);
    engine->set_int8_activations(o.int8_activations);
    auto sampler = std::make_unique<moe::Sampler<C.vocab_size>>(o.sampling);
    if (moe::Error e = engine->load(file)) return std::fprintf(stderr, "moe_infer: %s\n", e.what()), 1;
    if (o.bench) return bench(*engine, file, o, pool, split);

    const moe::CharTokenizer& tok = file.tokenizer();
    const moe::text::BpeTokenizer& bpe = file.bpe_tokenizer();
    std::vector<int32_t> prompt;
    std::string text = o.prompt;  // what is encoded: the prompt, in its chat format with --chat
    if (!o.ids.empty()) {
      std::string error;
      if (!moe::tools::parse_token_ids(o.ids, "--ids", prompt, error))
        return std::fprintf(stderr, "moe_infer: %s\n", error.c_str()), 2;
    } else if (bpe.present()) {
      const moe::tools::ChatFormat* f = nullptr;
      if (o.chat) {
        f = o.chat_template.empty() ? moe::tools::chat_format(bpe.chat_template())
                                    : moe::tools::chat_format(o.chat_template);
        if (f == nullptr && !o.chat_template.empty())
          return std::fprintf(stderr, "moe_infer: --chat-template '%s' is not known (%s are)\n",
                              o.chat_template.c_str(), moe::tools::chat_format_names().c_str()),
                 2;
        if (f == nullptr)
          return std::fprintf(stderr,
                              "moe_infer: this model's tokenizer_config.json has no chat template moe_infer knows; "
                              "give --chat-template NAME (%s)\n",
                              moe::tools::chat_format_names().c_str()),
                 2;
        text = std::string(f->before) + o.prompt + f->after;
      }

      std::vector<uint8_t> scratch(bpe.encode_scratch_bytes(text.size()));
      prompt.resize(2 * text.size() + 16);  // a byte gives at most one token, a piece between added tokens one more
      int n = 0;
      if (moe::Error e = bpe.encode(text.data(), text.size(), true, prompt.data(), static_cast<int>(prompt.size()), n,
                                    scratch.data(), scratch.size()))
        return std::fprintf(stderr, "moe_infer: the prompt: %s\n", e.what()), 2;
      prompt.resize(static_cast<size_t>(n));
      // The templates but ChatML begin with the BOS token, whether or not the post-processor adds it.
      if (f != nullptr && f->kind != moe::fb::ChatTemplate_ChatML && bpe.bos_id() >= 0 &&
          (prompt.empty() || prompt[0] != bpe.bos_id()))
        prompt.insert(prompt.begin(), bpe.bos_id());
    } else {
      if (!tok.present())
        return std::fprintf(stderr,
                            "moe_infer: this model has no tokenizer: give the prompt as token ids with --ids 1,2,3\n"),
               2;
      if (o.chat) return std::fprintf(stderr, "moe_infer: --chat needs a model with a Hugging Face tokenizer\n"), 2;
      prompt.resize(o.prompt.size());
      int n = 0;
      if (moe::Error e =
              tok.encode(o.prompt.data(), o.prompt.size(), prompt.data(), static_cast<int>(prompt.size()), n))
        return std::fprintf(stderr, "moe_infer: %s\n", e.what()), 2;
      prompt.resize(static_cast<size_t>(n));
    }
    if (prompt.empty())
      return std::fprintf(stderr, "moe_infer: the prompt is empty (give --prompt TEXT or --ids 1,2,3)\n"), 2;
    if (C.family == moe::Family::llama && static_cast<long long>(prompt.size()) > C.max_context)
      return std::fprintf(stderr, "moe_infer: the prompt has %zu tokens, more than the model's context of %d\n",
                          prompt.size(), C.max_context),
             context_hint(C.max_context), 2;

    const bool as_text = (tok.present() || bpe.present()) && o.ids.empty();
    if (o.echo) {
      if (as_text) std::fwrite(text.data(), 1, text.size(), stdout);
      else
        for (size_t i = 0; i < prompt.size(); ++i) std::printf("%s%d", i ? "," : "", prompt[i]);
      if (!flushed()) return write_failed();
    }

    // --logits-out: room for a row of logits per prompt token, made before any work.
    std::vector<float> all_logits;
    if (!o.logits_out.empty()) {
      if (static_cast<long long>(prompt.size()) > C.max_context)
        return std::fprintf(stderr, "moe_infer: the prompt has %zu tokens, more than the model's context of %d\n",
                            prompt.size(), C.max_context),
               2;
      all_logits.resize(prompt.size() * static_cast<size_t>(C.vocab_size));
    }
    const auto t_prompt = Clock::now();
    if (moe::Error e = engine->prefill(prompt.data(), static_cast<int>(prompt.size()),
                                       all_logits.empty() ? nullptr : all_logits.data())) {
      std::fprintf(stderr, "\nmoe_infer: %s\n", e.what());
      if (e.code == moe::ErrorCode::context_full) context_hint(C.max_context);
      return 1;
    }
    const double prompt_s = seconds_since(t_prompt);
    if (!all_logits.empty()) {
      if (const std::string error = write_logits(o.logits_out, all_logits, C.vocab_size); !error.empty())
        return std::fprintf(stderr, "\nmoe_infer: %s\n", error.c_str()), 1;
    }

    int generated = 0;
    bool output_ok = true;
    // Generation stops at the model's EOS and at the tokenizer's (a chat model's end of turn).
    const int32_t eos = o.ignore_eos ? -1 : engine->constants().eos_token_id;
    const int32_t eos_text = o.ignore_eos || !bpe.present() ? -1 : bpe.eos_id();
    // The continuation, decoded as it streams: a character split across tokens is printed
    // once whole. Its buffer is sized once here for the longest token.
    moe::text::StreamDecoder stream(bpe, false, false);
    std::vector<char> piece;
    if (bpe.present()) {
      piece.resize(3 * bpe.max_decoded_bytes() + moe::text::StreamDecoder::kSlack);
    }
    const auto t_gen = Clock::now();
    const moe::Error stop = moe::generate(*engine, *sampler, o.n_tokens, [&](int32_t id) {
      ++generated;
      const bool end = id == eos || id == eos_text;
      if (bpe.present() && o.ids.empty()) {
        if (!end) {
          const long n = stream.put(id, piece.data(), piece.size());
          if (n > 0) std::fwrite(piece.data(), 1, static_cast<size_t>(n), stdout);
        }
      } else if (as_text) {
        char utf8[4];
        std::fwrite(utf8, 1, static_cast<size_t>(tok.decode(id, utf8)), stdout);
      } else {
        std::printf("%s%d", (generated == 1 && !o.echo) ? "" : ",", id);
      }
      output_ok = flushed();
      return output_ok && !end;
    });
    if (bpe.present() && o.ids.empty()) {
      const long n = stream.finish(piece.data(), piece.size());
      if (n > 0) std::fwrite(piece.data(), 1, static_cast<size_t>(n), stdout);
    }
    const double gen_s = seconds_since(t_gen);
    std::printf("\n");
    if (!output_ok || !flushed()) return write_failed();
    if (stop) std::fprintf(stderr, "moe_infer: stopped after %d tokens: %s\n", generated, stop.what());
    if (stop.code == moe::ErrorCode::context_full) context_hint(C.max_context);

    if (o.stats) {
      std::fprintf(
          stderr,
          "[moe_infer] prompt %zu tok: %.3f ms (%.0f tok/s) | generation %d tok: %.3f ms (%.0f tok/s, %.4f ms/tok) | "
          "engine RAM %s B (KV cache %s) | model %s B | active params/token %s of %s | kernels %s | threads %d | "
          "config %s\n",
          prompt.size(), prompt_s * 1e3, static_cast<double>(prompt.size()) / prompt_s, generated, gen_s * 1e3,
          generated / gen_s, gen_s * 1e3 / (generated ? generated : 1),
          moe::tools::grouped(static_cast<long long>(sizeof(EngineT) + sizeof(*sampler))).c_str(),
          kKvCache == moe::KvCache::f16 ? "f16" : "f32",
          moe::tools::grouped(static_cast<long long>(file.size_bytes())).c_str(),
          moe::tools::grouped(EngineT::active_params()).c_str(), moe::tools::grouped(moe::total_params(C)).c_str(),
#if MOE_SIMD
          moe::kernels::simd::arch_name(),
#else
          "scalar",
#endif
          o.threads, moe::ConfigKey(C).c_str());
    }
    return 0;
  }
};

}  // namespace

int main(int argc, char** argv) {
  moe::tools::ArgParser args("moe_infer", "generate from a .moe Mixture-of-Experts model");
  Options o;
  bool list = false;
  args.option("-m,--model", o.model, "model file (.moe, from moe_convert)");
  args.option("-p,--prompt", o.prompt, "prompt text ('-': read it from stdin)");
  args.option("--prompt-file", o.prompt_file, "read the prompt text from this file");
  args.option("--ids", o.ids, "prompt as comma-separated token ids (any model)");
  args.excludes("--prompt", "--ids");
  args.excludes("--prompt", "--prompt-file");
  args.excludes("--prompt-file", "--ids");
  args.flag("--chat", o.chat, true, "wrap the prompt in the model's chat format (one user turn, then the assistant's)");
  args.option("--chat-template", o.chat_template,
              "with --chat: this format instead of the model's (chatml, mistral, ...)");
  args.flag("--ignore-eos", o.ignore_eos, true, "go on generating after the end-of-sequence token");
  args.option("-n,--tokens", o.n_tokens, "tokens to generate", 0, 1 << 30);
  args.option("-t,--temp", o.sampling.temperature, "sampling temperature; 0 = greedy");
  args.option("-k,--top-k", o.sampling.top_k, "keep the k most likely tokens; 0 = off", -(1 << 30), 1 << 30);
  args.option("--top-p", o.sampling.top_p, "nucleus sampling threshold; 1 = off");
  args.option("-s,--seed", o.sampling.seed, "random seed: the same seed gives the same text");
  o.threads = std::min(moe::platform::physical_cores(), 256);
  args.option("--threads", o.threads,
              "cores that share each weight product (threads started once, at load; default: the physical cores "
              "this process may use)",
              1, 256);
  args.flag("--f32-activations", o.int8_activations, false,
            "int8 weights meet f32 activations (as on targets without int8 dot products) instead of int8 ones");
  args.flag("--no-stats", o.stats, false, "do not print the stats line");
  args.flag("--no-echo", o.echo, false, "do not print the prompt before the continuation");
  args.flag("--no-verify", o.verify, false, "skip the CRC-32C check of the weights at load");
  args.option("--load", o.load,
              "how the model gets into memory: map (the file's pages, shared and loaded at once) or read (a copy in "
              "huge pages where the OS gives them: decode reads weights faster, the copy costs time at load, and a "
              "file replaced in place cannot stop the run)");
  args.flag("--no-mmap", o.no_mmap, true, "the same as --load read");
  args.flag("--list-configs", list, true, "print the model configs this build supports");
  args.flag("--bench", o.bench, true,
            "measure prefill and decode tokens/s (token ids; no prompt needed) and the bandwidth roofline");
  args.option("--bench-prompt", o.bench_options.prompt, "--bench: prompt tokens (pp)", 1, 1 << 30);
  args.option("--bench-tokens", o.bench_options.tokens, "--bench: tokens generated after the prompt (tg)", 1, 1 << 30);
  args.option("--bench-reps", o.bench_options.reps, "--bench: repetitions (medians are reported)", 1, 1 << 20);
  args.option("--bench-paired-reps", o.bench_options.paired_reps,
              "--bench: further tg runs for the paired roofline, each against probe passes just before and after "
              "it (0: none)",
              0, 1 << 20);
  args.option("--bench-probe-mib", o.bench_probe_mib,
              "--bench: size of the bandwidth probe's buffer, far beyond the caches (when not given: 8x the "
              "largest cache where that is more)",
              1, 4096);
  args.option("--json", o.json, "--bench: also write the results as JSON to this file ('-': stdout)");
  args.option("--logits-out", o.logits_out,
              "write the logits after every prompt token to this file as JSON {\"logits\": [[...], ...]} (one row "
              "per prompt position; with -n 0 nothing is generated)");
  if (const int code = args.parse(argc, argv); code >= 0) return code;
  if (list) {
    std::printf("%s\n", moe::tools::compiled_config_list("\n").c_str());
    return 0;
  }
  if (o.model.empty()) return std::fprintf(stderr, "moe_infer: --model is required (see --help)\n"), 2;
  if (o.load != "map" && o.load != "read")
    return std::fprintf(stderr, "moe_infer: --load is map or read, not '%s'\n", o.load.c_str()), 2;
  const bool read_model = o.load == "read" || o.no_mmap;
  // The prompt from a file or stdin, read whole before the model is opened.
  if (!o.prompt_file.empty() || o.prompt == "-") {
    FILE* in = o.prompt == "-" ? stdin : std::fopen(o.prompt_file.c_str(), "rb");
    if (in == nullptr)
      return std::fprintf(stderr, "moe_infer: cannot open --prompt-file '%s': %s\n", o.prompt_file.c_str(),
                          std::strerror(errno)),
             2;
    constexpr size_t kMaxPrompt = size_t{64} << 20;
    std::string text;
    char buf[65536];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, in)) > 0 && text.size() <= kMaxPrompt) text.append(buf, got);
    const bool failed = std::ferror(in) != 0;
    if (in != stdin) std::fclose(in);
    if (failed) return std::fprintf(stderr, "moe_infer: cannot read the prompt: %s\n", std::strerror(errno)), 2;
    if (text.size() > kMaxPrompt)
      return std::fprintf(stderr, "moe_infer: the prompt is larger than %zu MiB\n", kMaxPrompt >> 20), 2;
    o.prompt = std::move(text);
  }
  if (!o.chat_template.empty() && !o.chat)
    return std::fprintf(stderr, "moe_infer: --chat-template is used with --chat\n"), 2;
  if (o.prompt.empty() && o.ids.empty() && !o.bench)
    return std::fprintf(stderr,
                        "moe_infer: give a prompt: --prompt TEXT, --prompt-file F, -p - (stdin) or --ids 1,2,3\n"),
           2;
  if (moe::Error e = o.sampling.check()) return std::fprintf(stderr, "moe_infer: %s\n", e.what()), 2;
  if (o.bench) {
    // A probe that fits the cache in part reads faster than memory: the roofline reads high.
    const size_t cache = moe::tools::largest_cache_bytes(), floor_mib = (moe::tools::kProbeCacheMultiple * cache) >> 20;
    if (!args.given("--bench-probe-mib"))
      o.bench_probe_mib = std::max(o.bench_probe_mib, static_cast<int>(std::min<size_t>(floor_mib, 4096)));
    else if (static_cast<size_t>(o.bench_probe_mib) < floor_mib)
      std::fprintf(stderr,
                   "moe_infer: warning: --bench-probe-mib %d is less than %zux the largest cache (%zu MiB): the "
                   "probe reads part of it from the cache, so the roofline reads high (give %zu or more)\n",
                   o.bench_probe_mib, moe::tools::kProbeCacheMultiple, cache >> 20, floor_mib);
  }

  const auto t_load = Clock::now();
  moe::MappedFile map;
  if (moe::Error e = read_model ? moe::MappedFile::read(o.model.c_str(), map, o.threads)
                                : moe::MappedFile::open(o.model.c_str(), map))
    return std::fprintf(stderr, "moe_infer: %s\n", e.what()), 1;
  o.model_read = map.owned();
  if (!o.model_read) {
    struct sigaction bus {};
    bus.sa_handler = on_sigbus;
    sigaction(SIGBUS, &bus, nullptr);
  }
  moe::ModelFile file;
  moe::OpenOptions open_options;
  open_options.verify_checksums = o.verify;
  if (moe::Error e = moe::ModelFile::open(map.data(), map.size(), file, open_options))
    return std::fprintf(stderr, "moe_infer: '%s': %s\n", o.model.c_str(), e.what()), 1;
  o.load_ms = seconds_since(t_load) * 1e3;
  const auto* entry = moe::tools::CompiledModels<Generate>::find(file.config());
  if (entry == nullptr) {
    std::fputs(moe::tools::missing_config_message("moe_infer", o.model.c_str(), file.config()).c_str(), stderr);
    return 1;
  }
  return entry->run(file, o);
}
