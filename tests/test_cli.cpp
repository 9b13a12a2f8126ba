// moe_convert and moe_infer as a user runs them: exit codes and messages on bad input,
// and the happy path end to end (convert, then generate the reference continuation).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_support.hpp"

namespace moe {
namespace {

using Result = test::ProgramResult;
const auto run = test::run_program;
const auto slurp = test::read_file;

const std::string kConvert = MOE_CONVERT_PATH, kInfer = MOE_INFER_PATH;

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    ASSERT_EQ(
        run({kConvert, test::fixture_dir("makemoe-tiny").string(), "-o", (*dir_ / "tiny.moe").string(), "-q"}).code, 0);
    ASSERT_EQ(run({kConvert, test::fixture_dir("mixtral-tiny-a").string(), "-o", (*dir_ / "mix32.moe").string(),
                   "--experts", "fp32", "--attention", "fp32", "--embeddings", "fp32", "-q"})
                  .code,
              0);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string path(const char* name) { return (*dir_ / name).string(); }
  static test::TempDir* dir_;
};
test::TempDir* Cli::dir_ = nullptr;

void expect_failure(const Result& r, int code, const std::string& text) {
  EXPECT_EQ(r.code, code) << r.err;
  EXPECT_NE(r.err.find(text), std::string::npos) << "stderr: " << r.err;
}

TEST_F(Cli, ConvertPrintsTheReport) {
  const Result r = run({kConvert, test::fixture_dir("makemoe-tiny").string(), "-o", path("r.moe")});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* want : {"config  classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16",
                           "recipe  experts=q4/g32 attention=i8/row embeddings=i8/row", "experts",
                           "compression vs fp32 weights", "expert capacity factor 1", "noise_linear"})
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
}

TEST_F(Cli, ConvertRefusesBadInput) {
  expect_failure(run({kConvert}), 2, "checkpoint is required");
  expect_failure(run({kConvert, "/no/such/dir", "-o", path("x.moe")}), 1,
                 "'/no/such/dir' is not a checkpoint directory");
  expect_failure(run({kConvert, test::fixture_dir("makemoe-tiny").string(), "-o", path("x.moe"), "--experts", "int3"}),
                 1, "--experts: 'int3' is not one of int4, int8, fp16, fp32");
  expect_failure(run({kConvert, test::fixture_dir("makemoe-tiny").string(), "-o", "/no/such/dir/x.moe"}), 1,
                 "directory '/no/such/dir' does not exist");
  expect_failure(run({kConvert, test::fixture_dir("makemoe-tiny").string(), "-o", path("x.moe"), "--threads", "0"}), 2,
                 "--threads");
}

TEST_F(Cli, InferGreedyMatchesTheReferenceContinuation) {
  const auto cases = test::load_reference("mixtral-tiny-a");
  const auto& rc = cases[1];
  std::string ids, want;
  for (size_t i = 0; i < rc.input_ids.size(); ++i) {
    if (i) ids += ',';
    ids += std::to_string(rc.input_ids[i]);
  }
  want = ids;
  for (int32_t id : rc.greedy) {
    want += ',';
    want += std::to_string(id);
  }
  const Result r =
      run({kInfer, "--model", path("mix32.moe"), "--ids", ids, "-n", std::to_string(rc.greedy.size()), "--temp", "0"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, want + "\n");
  EXPECT_NE(r.err.find("[moe_infer] prompt 7 tok"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("active params/token 129,856 of 234,304"), std::string::npos) << r.err;
}

// Each Hugging Face family as a user runs it: moe_convert at fp32, then moe_infer's
// --logits-out (every prompt position, against the reference's rows) and its greedy
// continuation, which stops after EOS as transformers' generate() does.
TEST_F(Cli, FamiliesConvertAndRunWithLogitsOut) {
  for (const char* fixture : {"qwen3moe-tiny-a", "olmoe-tiny-a", "granitemoe-tiny-a", "qwen2moe-tiny-a"}) {
    SCOPED_TRACE(fixture);
    const std::string model = path((std::string(fixture) + ".moe").c_str());
    const Result conv = run({kConvert, test::fixture_dir(fixture).string(), "-o", model, "--experts", "fp32",
                             "--attention", "fp32", "--embeddings", "fp32", "-q"});
    ASSERT_EQ(conv.code, 0) << conv.err;
    for (const auto& rc : test::load_reference(fixture)) {
      std::string ids, want;
      for (size_t i = 0; i < rc.input_ids.size(); ++i) ids.append(i ? "," : "").append(std::to_string(rc.input_ids[i]));
      want = ids;
      for (int32_t id : rc.greedy) want.append(",").append(std::to_string(id));
      const std::string logits_path = path("logits.json");
      const Result r = run({kInfer, "--model", model, "--ids", ids, "-n", "24", "--temp", "0", "--logits-out",
                            logits_path, "--no-stats"});
      ASSERT_EQ(r.code, 0) << r.err;
      EXPECT_EQ(r.out, want + "\n");
      const nlohmann::json j = nlohmann::json::parse(slurp(logits_path));
      ASSERT_EQ(j.size(), 1u);
      ASSERT_EQ(j["logits"].size(), rc.logits.size());
      for (size_t row = 0; row < rc.logits.size(); ++row) {
        const auto got = j["logits"][row].get<std::vector<float>>();
        ASSERT_EQ(got.size(), rc.logits[row].size());
        double max_ref = 0, max_diff = 0;
        for (size_t v = 0; v < got.size(); ++v) {
          max_ref = std::max(max_ref, std::fabs(static_cast<double>(rc.logits[row][v])));
          max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[v]) - rc.logits[row][v]));
        }
        EXPECT_LT(max_diff, 1e-4 * max_ref) << "position " << row;
      }
    }
  }
}

// One row per prompt token, and the last row is what greedy decoding continues from.
TEST_F(Cli, LogitsOutRowsAndRefusals) {
  const Result a = run({kInfer, "--model", path("mix32.moe"), "--ids", "1,2,3", "-n", "0", "--logits-out",
                        path("a.json"), "--no-stats"});
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, "1,2,3\n");
  const nlohmann::json ja = nlohmann::json::parse(slurp(path("a.json")));
  ASSERT_EQ(ja["logits"].size(), 3u);
  const auto last = ja["logits"][2].get<std::vector<float>>();
  ASSERT_EQ(last.size(), 96u);
  const auto argmax = std::max_element(last.begin(), last.end()) - last.begin();
  const Result next = run(
      {kInfer, "--model", path("mix32.moe"), "--ids", "1,2,3", "-n", "1", "--temp", "0", "--no-stats", "--no-echo"});
  ASSERT_EQ(next.code, 0) << next.err;
  EXPECT_EQ(next.out, std::to_string(argmax) + "\n");
  expect_failure(
      run({kInfer, "--model", path("mix32.moe"), "--ids", "1,2", "-n", "0", "--logits-out", dir_->path().string()}), 1,
      "is not a regular file");
}

TEST_F(Cli, BenchReportsThroughputAndTheWeightsEachTokenReads) {
  const std::string json_path = path("bench.json");
  const Result r = run({kInfer, "--model", path("mix32.moe"), "--bench", "--bench-prompt", "16", "--bench-tokens", "32",
                        "--bench-reps", "2", "--bench-paired-reps", "2", "--bench-probe-mib", "32", "--json", json_path,
                        "--threads", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("pp16: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tg32: "), std::string::npos) << r.out;
  const nlohmann::json j = nlohmann::json::parse(slurp(json_path));
  EXPECT_EQ(j["config"], "llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128");
  EXPECT_GT(j["decode_tok_s"].get<double>(), 0);
  EXPECT_GT(j["prefill_tok_s"].get<double>(), 0);
  EXPECT_EQ(j["pp_tok_s"], j["prefill_tok_s"]);  // llama-bench's pp is ours: from an empty cache
  EXPECT_GT(j["tg_tok_s"].get<double>(), 0);     // llama-bench's tg: from an empty cache
  EXPECT_NE(r.out.find("as llama-bench: pp16 "), std::string::npos) << r.out;
  EXPECT_GT(j["read_bandwidth_gb_s"].get<double>(), 0);
  // The paired roofline: its own tg runs, each against probe passes beside it.
  EXPECT_GT(j["read_bandwidth_paired_gb_s"].get<double>(), 0);
  EXPECT_GT(j["roofline_fraction_paired"].get<double>(), 0);
  EXPECT_LE(j["roofline_fraction_paired_min"].get<double>(), j["roofline_fraction_paired"].get<double>());
  EXPECT_GE(j["roofline_fraction_paired_max"].get<double>(), j["roofline_fraction_paired"].get<double>());
  EXPECT_NE(r.out.find("paired with the probe (2 more tg32"), std::string::npos) << r.out;
  const std::string unpaired_path = path("unpaired.json");
  const Result unpaired =
      run({kInfer, "--model", path("mix32.moe"), "--bench", "--bench-prompt", "4", "--bench-tokens", "4",
           "--bench-reps", "1", "--bench-paired-reps", "0", "--bench-probe-mib", "32", "--json", unpaired_path});
  ASSERT_EQ(unpaired.code, 0) << unpaired.err;
  EXPECT_EQ(unpaired.out.find("paired with the probe"), std::string::npos) << unpaired.out;
  EXPECT_EQ(nlohmann::json::parse(slurp(unpaired_path))["roofline_fraction_paired"].get<double>(), 0);
  EXPECT_EQ(j["threads"], 2);
  EXPECT_EQ(j["load"], "map");  // the default
  // fp32, d 64, kv dim 32, 4 experts of hidden 128, top-2, vocab 96: one embedding row,
  // then per layer two norms, q/k/v/o, the router and 2 of the 4 experts' three matrices,
  // then the final norm and lm_head.
  const long f = 4, per_layer = 2 * 64 * f + (64 * 64 + 2 * 32 * 64 + 64 * 64) * f + 4 * 64 * f + 2 * 3 * 128 * 64 * f;
  EXPECT_EQ(j["weight_bytes_per_token"].get<long>(), 64 * f + 2 * per_layer + 64 * f + 96 * 64 * f);
  // tg32 after 16 tokens: positions 16..47 see 17..48 cached positions, 32.5 on average,
  // each holding a key and a value of kv dim 32 in 2 layers.
  const double kv_element = j["kv_cache"] == "f16" ? 2 : 4;
  const double kv_bytes = 32.5 * 2 * 2 * 32 * kv_element, weight_bytes = j["weight_bytes_per_token"].get<double>();
  EXPECT_EQ(j["kv_cache_bytes_per_token"].get<double>(), kv_bytes);
  EXPECT_NEAR(j["roofline_fraction_with_kv"].get<double>() / j["roofline_fraction"].get<double>(),
              (weight_bytes + kv_bytes) / weight_bytes, 2e-3);
  EXPECT_GT(j["roofline_fraction_paired_with_kv"].get<double>(), j["roofline_fraction_paired"].get<double>());
  EXPECT_NE(r.out.find("B more a token at positions 16-47): "), std::string::npos) << r.out;
  expect_failure(
      run({kInfer, "--model", path("mix32.moe"), "--bench", "--bench-prompt", "100", "--bench-tokens", "100"}), 2,
      "exceed the model's context of 128 tokens");
}

// The probe's buffer must dwarf the caches, or each pass reads part of it from the
// largest one and the roofline reads high: not given, it grows to 8x that cache; given
// smaller, moe_infer says so.
TEST_F(Cli, BenchProbeStaysFarBeyondTheLargestCache) {
  size_t largest = 0;  // as Linux reports it; read here apart from the tool
  for (int i = 0; i < 16; ++i) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    size_t size = 0;
    char unit = 0;
    if (in >> size) {
      in >> unit;
      largest = std::max(largest, size << (unit == 'K' ? 10 : unit == 'M' ? 20 : 0));
    }
  }
  if (largest < (size_t{1} << 20)) GTEST_SKIP() << "this machine reports no cache of 1 MiB or more";
  const std::string small_path = path("small_probe.json"), auto_path = path("auto_probe.json");
  const std::vector<std::string> bench = {kInfer,           "--model", path("mix32.moe"), "--bench",
                                          "--bench-prompt", "4",       "--bench-tokens",  "4",
                                          "--bench-reps",   "1",       "--threads",       "1"};
  std::vector<std::string> small = bench;
  small.insert(small.end(), {"--bench-probe-mib", "1", "--json", small_path});
  const Result s = run(small);
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_NE(s.err.find("warning: --bench-probe-mib 1 is less than 8x the largest cache (" +
                       std::to_string(largest >> 20) + " MiB)"),
            std::string::npos)
      << s.err;
  EXPECT_EQ(nlohmann::json::parse(slurp(small_path))["probe_mib"], 1);
  std::vector<std::string> unset = bench;
  unset.insert(unset.end(), {"--bench-paired-reps", "0", "--json", auto_path});
  const Result a = run(unset);
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.err.find("warning"), std::string::npos) << a.err;
  const int probe_mib = nlohmann::json::parse(slurp(auto_path))["probe_mib"];
  EXPECT_EQ(static_cast<size_t>(probe_mib), std::min<size_t>(std::max<size_t>(512, 8 * largest >> 20), 4096));
}

// The weights read into memory (huge pages) and mapped are the same bytes: the same text.
TEST_F(Cli, MappedAndReadModelsGiveTheSameText) {
  std::string text[3];
  const std::vector<std::string> loads[3] = {{"--load", "map"}, {"--load", "read", "--threads", "2"}, {"--no-mmap"}};
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> argv = {kInfer,   "-m",  path("mix32.moe"), "--ids", "1,2,3",     "-n", "20",
                                     "--temp", "0.8", "--seed",          "7",     "--no-stats"};
    argv.insert(argv.end(), loads[i].begin(), loads[i].end());
    const Result r = run(argv);
    ASSERT_EQ(r.code, 0) << loads[i][0] << ": " << r.err;
    text[i] = r.out;
  }
  EXPECT_FALSE(text[0].empty());
  EXPECT_EQ(text[0], text[1]);
  EXPECT_EQ(text[0], text[2]);
}

TEST_F(Cli, InferTextIsReproducibleBySeed) {
  auto gen = [&](const char* seed, const char* threads = "1") {
    return run({kInfer, "-m", path("tiny.moe"), "-p", "ROMEO:", "-n", "60", "--temp", "0.8", "--top-p", "0.9", "--seed",
                seed, "--no-stats", "--threads", threads});
  };
  const Result a = gen("1"), b = gen("1"), c = gen("2"), d = gen("1", "3");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.out, d.out);  // worker threads change where rows are computed, not what
  EXPECT_NE(a.out, c.out);
  EXPECT_EQ(a.out.rfind("ROMEO:", 0), 0u);
  EXPECT_GE(a.out.size(), 6u + 60u);
  EXPECT_TRUE(a.err.empty()) << a.err;
}

// int4 through the programs: the report names it, the file is version 5, and generation
// with the default threads (the physical cores) prints what one thread prints.
TEST_F(Cli, Int4ConvertsAndGeneratesWithTheDefaultThreads) {
  const Result c =
      run({kConvert, test::fixture_dir("makemoe-tiny").string(), "-o", path("tiny4.moe"), "--experts", "int4"});
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_NE(c.out.find("experts=q4/g32"), std::string::npos) << c.out;
  const std::string bytes = slurp(path("tiny4.moe"));
  test::AlignedBuffer buf(bytes.data(), bytes.size());
  ModelFile file;
  ASSERT_TRUE(ModelFile::open(buf.data(), buf.size(), file).ok());
  EXPECT_EQ(file.format_version(), 5u);
  // The converter's threads share the quantization, not the result.
  ASSERT_EQ(run({kConvert, test::fixture_dir("makemoe-tiny").string(), "-o", path("tiny4-1.moe"), "--experts", "int4",
                 "--threads", "1", "-q"})
                .code,
            0);
  EXPECT_EQ(slurp(path("tiny4-1.moe")), bytes);
  const Result one =
      run({kInfer, "-m", path("tiny4.moe"), "-p", "ROMEO:", "-n", "40", "--temp", "0", "--no-stats", "--threads", "1"});
  const Result all = run({kInfer, "-m", path("tiny4.moe"), "-p", "ROMEO:", "-n", "40", "--temp", "0", "--no-stats"});
  ASSERT_EQ(one.code, 0) << one.err;
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_EQ(all.out, one.out);
  EXPECT_GE(one.out.size(), 46u);
}

TEST_F(Cli, InferRefusesBadInput) {
  expect_failure(run({kInfer, "-p", "x"}), 2, "--model is required");
  expect_failure(run({kInfer, "-m", path("tiny.moe")}), 2, "give a prompt");
  expect_failure(run({kInfer, "-m", path("nope.moe"), "-p", "x"}), 1,
                 "cannot open '" + path("nope.moe") + "': No such file or directory");
  expect_failure(run({kInfer, "-m", (test::fixture_dir("makemoe-tiny") / "config.json").string(), "-p", "x"}), 1,
                 "not a .moe file");
  expect_failure(run({kInfer, "-m", path("tiny.moe"), "-p", "ROMEO: \xc3\xa9"}), 2,
                 "prompt character '\xc3\xa9' (U+00E9) at byte 7 is not in the model's vocabulary of 65 characters");
  expect_failure(run({kInfer, "-m", path("mix32.moe"), "-p", "hello"}), 2,
                 "this model has no tokenizer: give the prompt as token ids");
  expect_failure(run({kInfer, "-m", path("mix32.moe"), "--ids", "1,x,3"}), 2, "--ids: 'x' is not a token id");
  expect_failure(run({kInfer, "-m", path("mix32.moe"), "--ids", "1,200"}), 1,
                 "token id 200 at index 1 is outside the vocabulary [0, 96)");
  expect_failure(run({kInfer, "-m", path("tiny.moe"), "-p", "A", "--temp", "-1"}), 2,
                 "temperature must be a finite number >= 0");
  expect_failure(run({kInfer, "-m", path("tiny.moe"), "-p", "A", "--top-p", "0"}), 2, "top-p must be in (0, 1]");
  // Usage errors (tools/arg_parser.hpp).
  expect_failure(run({kInfer, "-m", path("tiny.moe"), "-p", "A", "--bogus"}), 2, "unknown option --bogus");
  expect_failure(run({kInfer, "-m", path("tiny.moe"), "-p", "A", "-n", "-1"}), 2, "-n: '-1' is not in [0, ");
  expect_failure(run({kInfer, "-m", path("tiny.moe"), "-p", "A", "--threads=0"}), 2,
                 "--threads: '0' is not in [1, 256]");
  expect_failure(run({kInfer, "-m", path("tiny.moe"), "-p", "A", "--temp", "warm"}), 2,
                 "--temp: 'warm' is not a number");
  expect_failure(run({kInfer, "-m", path("mix32.moe"), "-p", "A", "--ids", "1"}), 2,
                 "--prompt and --ids cannot be given together");
  expect_failure(run({kInfer, "-m", path("tiny.moe"), "-p"}), 2, "-p needs a value");
  expect_failure(run({kInfer, "-m", path("tiny.moe"), "-p", "A", "extra"}), 2, "unexpected argument 'extra'");
  expect_failure(run({kInfer, "-m", path("tiny.moe"), "-p", "A", "--load", "mmap"}), 2,
                 "--load is map or read, not 'mmap'");
  // A truncated copy of a model.
  const std::string bytes = slurp(path("tiny.moe"));
  std::ofstream(path("cut.moe"), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  expect_failure(run({kInfer, "-m", path("cut.moe"), "-p", "A"}), 1, "model file is truncated");
}

TEST_F(Cli, InferHelpListsEveryOptionWithItsDefault) {
  const Result r = run({kInfer, "--help"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* option :
       {"--model",           "--prompt", "--ids",          "--tokens",       "--temp",       "--top-k",
        "--top-p",           "--seed",   "--threads",      "--no-stats",     "--no-echo",    "--no-verify",
        "--list-configs",    "--bench",  "--bench-prompt", "--bench-tokens", "--bench-reps", "--bench-paired-reps",
        "--bench-probe-mib", "--json",   "--load",         "--no-mmap"})
    EXPECT_NE(r.out.find(option), std::string::npos) << option;
  EXPECT_NE(r.out.find("tokens to generate [200]"), std::string::npos) << r.out;
  // --name=value is the same as --name value.
  const Result a = run({kInfer, "-m", path("mix32.moe"), "--ids", "1,2", "-n", "5", "--temp", "0", "--no-stats"});
  const Result b = run({kInfer, "--model=" + path("mix32.moe"), "--ids=1,2", "--tokens=5", "--temp=0", "--no-stats"});
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
}

TEST_F(Cli, UnknownConfigNamesTheCMakeFlag) {
  ASSERT_EQ(
      run({kConvert, test::fixture_dir("mixtral-tiny-a").string(), "-o", path("c64.moe"), "--max-context", "64", "-q"})
          .code,
      0);
  const Result r = run({kInfer, "-m", path("c64.moe"), "--ids", "1,2"});
  expect_failure(r, 1,
                 "needs model config llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c64, which this build does not include");
  // The command rebuilds the build this moe_infer came from, not some other directory.
  const std::string build = std::filesystem::path(kInfer).parent_path().parent_path().string();
  EXPECT_NE(
      r.err.find("cmake -S " MOE_SOURCE_DIR " -B " + build +
                 " -DMOE_EXTRA_CONFIGS=\"llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c64\" && cmake --build " + build),
      std::string::npos)
      << r.err;
  const Result list = run({kInfer, "--list-configs"});
  EXPECT_EQ(list.code, 0);
  EXPECT_NE(list.out.find("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16\n"), std::string::npos);
}

TEST_F(Cli, LlamaContextFullStopsCleanly) {
  std::string ids = "1";
  for (int i = 0; i < 119; ++i) ids += ",2";
  const Result r = run({kInfer, "-m", path("mix32.moe"), "--ids", ids, "-n", "20", "--temp", "0"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("stopped after 9 tokens: context is full"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("moe_convert --max-context N"), std::string::npos) << r.err;  // CLI advice, not library advice
  EXPECT_EQ(r.err.find("reset()"), std::string::npos) << r.err;
}

// moe_convert killed with SIGKILL at random moments, over a file it is replacing: the
// destination is always the old complete file or the new complete one. Delays are drawn
// around the measured conversion time, widened or narrowed until both outcomes occur, so
// the loop cannot pass by only ever killing too early or too late.
TEST_F(Cli, ConvertKilledAnywhereLeavesTheOldOrTheNewFile) {
  const std::string src = test::fixture_dir("mixtral-tiny-a").string();
  const auto started = std::chrono::steady_clock::now();
  ASSERT_EQ(run({kConvert, src, "-o", path("new.moe"), "-q"}).code, 0);
  const long convert_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started).count();
  const std::string fresh = slurp(path("new.moe")), old = slurp(path("mix32.moe"));
  ASSERT_NE(fresh, old);

  const std::filesystem::path dir = *dir_ / "killed";
  std::filesystem::create_directories(dir);
  const std::string dest = (dir / "model.moe").string();
  std::mt19937 rng(2026);
  double range_us = 2.0 * static_cast<double>(convert_us);
  int kept_old = 0, got_new = 0, killed = 0;
  for (int i = 0; i < 150 && (kept_old < 8 || got_new < 8); ++i) {
    std::filesystem::copy_file(path("mix32.moe"), dest, std::filesystem::copy_options::overwrite_existing);
    const long delay = 1 + static_cast<long>(std::uniform_real_distribution<double>(0, range_us)(rng));
    const Result r = test::run_program_killed_after({kConvert, src, "-o", dest, "-q"}, delay);
    const std::string now = slurp(dest);
    ASSERT_TRUE(now == old || now == fresh)
        << "after SIGKILL at " << delay << " us the destination is neither file (" << now.size() << " bytes)";
    if (!r.killed()) {
      ASSERT_EQ(r.code, 0) << r.err;
    }
    killed += r.killed();
    (now == old ? kept_old : got_new) += 1;
    if (kept_old > got_new + 4) range_us *= 1.5;
    if (got_new > kept_old + 4) range_us /= 1.5;
    for (const auto& e :
         std::filesystem::directory_iterator(dir))  // temp files a killed writer left: never the destination
      if (e.path() != dest) std::filesystem::remove(e.path());
  }
  EXPECT_GT(kept_old, 0);
  EXPECT_GT(got_new, 0);
  EXPECT_GT(killed, 0);
  std::printf("moe_convert SIGKILL loop: %d kept the old file, %d had the new one, %d runs killed\n", kept_old, got_new,
              killed);
}

}  // namespace
}  // namespace moe
