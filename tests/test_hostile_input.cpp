// The tools given the paths, files and values a careless or hostile user passes: outputs
// that are not regular files, outputs that are inputs, FIFOs, recipe bombs, corrupt
// safetensors headers. Each case destroyed a file, hung, crashed or exhausted memory
// before the fix; now each is refused with a message, and nothing is lost.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "converter/checkpoint.hpp"
#include "converter/converter.hpp"
#include "converter/input_error.hpp"
#include "converter/input_file.hpp"
#include "converter/safetensors.hpp"
#include "moe/model_file.hpp"
#include "platform/mapped_file.hpp"
#include "support/test_support.hpp"
#include "trainer/merge/recipe.hpp"

namespace moe {
namespace {

namespace fs = std::filesystem;
using Result = test::ProgramResult;
const auto slurp = test::read_file;

const std::string kConvert = MOE_CONVERT_PATH, kInfer = MOE_INFER_PATH, kMerge = MOE_MERGE_PATH,
                  kTrain = MOE_TRAIN_PATH;
constexpr long kHang = 30'000'000;  // µs: a tool that blocks this long on a FIFO has hung

// A run that must end by itself with a refusal naming `text`.
void expect_refusal(const Result& r, const std::string& text) {
  EXPECT_FALSE(r.killed()) << "the tool hung";
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.err.find(text), std::string::npos) << "stderr: " << r.err;
}
Result run(std::vector<std::string> argv) { return test::run_program_killed_after(std::move(argv), kHang); }

void write_text(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }
mode_t mode_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st.st_mode;
}
std::vector<std::string> convert_args(const fs::path& ck, const fs::path& out) {
  return {kConvert, ck.string(), "-o", out.string(), "-q"};
}

// Two small checkpoints of one shape, tmp/a and tmp/b, to merge.
void make_two_checkpoints(const test::TempDir& tmp) {
  for (const char* name : {"a", "b"}) {
    const Result r =
        test::run_program({MOE_RANDOM_CHECKPOINT_PATH, "--config", "classic-d16-l1-h2-kv2-hd8-e2-k1-f32-v4-c8", "--out",
                           (tmp / name).string(), "--seed", name[0] == 'a' ? "1" : "2"});
    ASSERT_EQ(r.code, 0) << r.err;
  }
}

// ---- 1. outputs that are not regular files ------------------------------------------------

TEST(HostileOutput, NotARegularFileIsRefusedAndLeftAsItWas) {
  test::TempDir tmp;
  const fs::path ck = test::fixture_dir("makemoe-tiny");
  ASSERT_EQ(mkfifo((tmp / "fifo").c_str(), 0644), 0);
  expect_refusal(run(convert_args(ck, tmp / "fifo")), "a FIFO");
  EXPECT_TRUE(S_ISFIFO(mode_of(tmp / "fifo")));

  fs::create_directory(tmp / "dir");
  expect_refusal(run(convert_args(ck, tmp / "dir")), "a directory");
  EXPECT_TRUE(fs::is_directory(tmp / "dir"));

  fs::create_symlink(tmp / "fifo", tmp / "to-fifo");
  expect_refusal(run(convert_args(ck, tmp / "to-fifo")), "a symbolic link to a FIFO");
  EXPECT_TRUE(fs::is_symlink(tmp / "to-fifo"));
  EXPECT_TRUE(S_ISFIFO(mode_of(tmp / "fifo")));
}

TEST(HostileOutput, SymlinkToARegularFileIsReplacedAndItsTargetKept) {
  test::TempDir tmp;
  write_text(tmp / "target", "keep me");
  fs::create_symlink(tmp / "target", tmp / "link.moe");
  const Result r = run(convert_args(test::fixture_dir("makemoe-tiny"), tmp / "link.moe"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(fs::is_symlink(tmp / "link.moe"));
  EXPECT_TRUE(fs::is_regular_file(tmp / "link.moe"));
  EXPECT_EQ(slurp(tmp / "target"), "keep me");
}

TEST(HostileOutput, ReadOnlyFileIsRefusedAndAWritableOneKeepsItsMode) {
  test::TempDir tmp;
  write_text(tmp / "ro.moe", "old");
  ASSERT_EQ(::chmod((tmp / "ro.moe").c_str(), 0444), 0);
  expect_refusal(run(convert_args(test::fixture_dir("makemoe-tiny"), tmp / "ro.moe")), "read-only");
  EXPECT_EQ(slurp(tmp / "ro.moe"), "old");
  EXPECT_EQ(mode_of(tmp / "ro.moe") & 07777, 0444u);

  write_text(tmp / "mine.moe", "old");
  ASSERT_EQ(::chmod((tmp / "mine.moe").c_str(), 0600), 0);
  const Result r = run(convert_args(test::fixture_dir("makemoe-tiny"), tmp / "mine.moe"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(slurp(tmp / "mine.moe"), "old");
  EXPECT_EQ(mode_of(tmp / "mine.moe") & 07777, 0600u);
}

// ---- 2. outputs that are inputs -----------------------------------------------------------

TEST(HostileOutput, AnInputIsNeverReplacedUnderAnyName) {
  test::TempDir tmp;
  const fs::path ck = tmp / "ck";
  test::copy_dir(test::fixture_dir("makemoe-tiny"), ck);
  const std::string weights = slurp(ck / "model.safetensors"), config = slurp(ck / "config.json");
  expect_refusal(run(convert_args(ck, ck / "model.safetensors")), "is an input of this run");
  expect_refusal(run(convert_args(ck, ck / "config.json")), "is an input of this run");
  fs::create_hard_link(ck / "model.safetensors", tmp / "alias.moe");  // same inode, another name
  expect_refusal(run(convert_args(ck, tmp / "alias.moe")), "is an input of this run");
  EXPECT_EQ(slurp(ck / "model.safetensors"), weights);
  EXPECT_EQ(slurp(ck / "config.json"), config);
}

TEST(HostileOutput, MergeIntoOneOfItsInputsIsRefused) {
  test::TempDir tmp;
  make_two_checkpoints(tmp);
  const std::string a = slurp(tmp / "a" / "model.safetensors");
  expect_refusal(run({kMerge, "--method", "linear", "--model", (tmp / "a").string(), "--model", (tmp / "b").string(),
                      "--out", (tmp / "a").string()}),
                 "is an input of this run");
  EXPECT_EQ(slurp(tmp / "a" / "model.safetensors"), a);
}

// ---- 6. config values the loader would refuse ---------------------------------------------

TEST(HostileConfig, OutOfRangeValuesAreRefusedAndTheOldModelKept) {
  test::TempDir tmp;
  const fs::path ck = tmp / "ck";
  test::copy_dir(test::fixture_dir("makemoe-tiny"), ck);
  ASSERT_EQ(run(convert_args(ck, tmp / "model.moe")).code, 0);
  const std::string good = slurp(tmp / "model.moe");
  const nlohmann::json config = nlohmann::json::parse(slurp(ck / "config.json"));
  const std::vector<std::pair<nlohmann::json, std::string>> cases = {
      {{{"layer_norm_eps", -1}}, "it must be in (0, 1)"},
      {{{"layer_norm_eps", 0}}, "it must be in (0, 1)"},
      {{{"layer_norm_eps", 2}}, "it must be in (0, 1)"},
      {{{"layer_norm_eps", 1e300}}, "beyond a float's range"},
  };
  for (const auto& [change, why] : cases) {
    nlohmann::json c = config;
    c.update(change);
    write_text(ck / "config.json", c.dump());
    expect_refusal(run(convert_args(ck, tmp / "model.moe")), why);
    EXPECT_EQ(slurp(tmp / "model.moe"), good) << change.dump();
  }
  const fs::path mix = tmp / "mix";
  test::copy_dir(test::fixture_dir("mixtral-tiny-a"), mix);
  const nlohmann::json mix_config = nlohmann::json::parse(slurp(mix / "config.json"));
  for (const auto& change : {nlohmann::json{{"bos_token_id", -5}}, nlohmann::json{{"eos_token_id", 4294967297ll}},
                             nlohmann::json{{"eos_token_id", 96}}}) {
    nlohmann::json c = mix_config;
    c.update(change);
    write_text(mix / "config.json", c.dump());
    expect_refusal(run(convert_args(mix, tmp / "model.moe")), "outside the vocabulary [0, 96)");
    EXPECT_EQ(slurp(tmp / "model.moe"), good) << change.dump();
  }
}

// ---- 11. merge options that would publish NaN, Inf or zeros ------------------------------

TEST(HostileMerge, NonFiniteOrDegenerateOptionsAreRefused) {
  test::TempDir tmp;
  make_two_checkpoints(tmp);
  const std::string a = (tmp / "a").string(), b = (tmp / "b").string(), out = (tmp / "out").string();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--method", "linear", "--model", a, "--model", b, "--weight", "nan", "--weight", "1"}, "must be finite"},
      {{"--method", "linear", "--model", a, "--model", b, "--weight", "inf", "--weight", "1"}, "must be finite"},
      {{"--method", "linear", "--model", a, "--model", b, "--weight", "0", "--weight", "0"}, "is 0"},
      {{"--method", "linear", "--model", a, "--model", b, "--weight", "3e38", "--weight", "3e38", "--no-normalize"},
       "infinite value"},
      {{"--method", "slerp", "--base", a, "--model", b, "--t", "nan"}, "must be finite"},
      {{"--method", "slerp", "--base", a, "--model", b, "--t", "2"}, "parameters.t must be in [0.0, 1.0]"},
      {{"--method", "task_arithmetic", "--base", a, "--model", b, "--lambda", "inf"}, "lambda must be a finite number"},
      {{"--method", "ties", "--base", a, "--model", b, "--density", "nan"}, "must be finite"},
      {{"--method", "ties", "--base", a, "--model", b, "--density", "0"}, "density must be in (0.0, 1.0]"},
  };
  for (const auto& [options, why] : cases) {
    std::vector<std::string> argv = {kMerge};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), {"--out", out});
    SCOPED_TRACE(options[options.size() - 1]);
    expect_refusal(run(argv), why);
    EXPECT_FALSE(fs::exists(tmp / "out" / "model.safetensors"));
    fs::remove_all(tmp / "out");
  }
}

// ---- 5. sizes checked before any work -----------------------------------------------------

TEST(HostileConfig, ModelsTooLargeAreRefusedAtOnceWithTheNumbers) {
  test::TempDir tmp;
  const fs::path ck = tmp / "ck";
  test::copy_dir(test::fixture_dir("mixtral-tiny-a"), ck);
  nlohmann::json config = nlohmann::json::parse(slurp(ck / "config.json"));
  const auto t0 = std::chrono::steady_clock::now();
  // A 200-byte bomb: 5e16 parameters, more than any disk holds. Large models are streamed
  // (format version 3: no 2 GiB limit), so what refuses it is the disk space, checked
  // before any work.
  config.update(
      {{"num_hidden_layers", 4096}, {"num_local_experts", 4096}, {"hidden_size", 16384}, {"intermediate_size", 65536}});
  write_text(ck / "config.json", config.dump());
  expect_refusal(run(convert_args(ck, tmp / "m.moe")), "of disk");
  // Mixtral-8x7B's shape over the fixture's small tensors: refused at once, naming the
  // first tensor that does not fit (or the disk space, where the 47 GB do not fit), not
  // after writing gigabytes.
  config.update({{"hidden_size", 4096},
                 {"num_hidden_layers", 32},
                 {"num_attention_heads", 32},
                 {"num_key_value_heads", 8},
                 {"head_dim", 128},
                 {"num_local_experts", 8},
                 {"intermediate_size", 14336},
                 {"vocab_size", 32000}});
  write_text(ck / "config.json", config.dump());
  const Result r = run(convert_args(ck, tmp / "m.moe"));
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(r.err.find("has shape [96, 64], expected [32000, 4096]") != std::string::npos ||
              r.err.find("46,702,792,704 parameters") != std::string::npos)
      << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_FALSE(fs::exists(tmp / "m.moe"));

  // Peak memory against the machine's: refused with both figures.
  try {
    converter::check_conversion_budget(config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128"), {}, 1e5);
    ADD_FAILURE() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("of memory"), std::string::npos) << e.what();
  }
  expect_refusal(run({MOE_RANDOM_CHECKPOINT_PATH, "--config",
                      "llama-d16384-l4096-h128-kv128-hd128-e4096-k2-f65536-v65536-c64", "--out", (tmp / "r").string()}),
                 "of disk");
}

// ---- 13. the smaller ones -----------------------------------------------------------------

TEST(HostileSmall, DuplicateCharsOptionValuesAndAFolderForAFile) {
  // A .moe whose char tokenizer was edited to list a character twice.
  const converter::Conversion c = converter::convert_checkpoint(test::fixture_dir("makemoe-tiny"), {});
  test::AlignedBuffer buf(c.bytes);
  auto* chars = const_cast<flatbuffers::Vector<uint32_t>*>(fb::GetSizePrefixedModel(buf.data())->tokenizer()->chars());
  chars->Mutate(5, chars->Get(4));
  ModelFile file;
  const Error e = ModelFile::open(buf.data(), buf.size(), file);
  EXPECT_EQ(e.code, ErrorCode::bad_tokenizer);
  EXPECT_NE(std::string(e.what()).find("twice"), std::string::npos) << e.what();

  test::TempDir tmp;
  const fs::path ck = test::fixture_dir("makemoe-tiny");
  for (const char* bad : {"nan", "inf", "-1"}) {
    const Result r = run({kConvert, ck.string(), "-o", (tmp / "m.moe").string(), "--capacity-factor", bad});
    expect_refusal(r, "is not a number in [0, 1e+06]");
    EXPECT_LT(r.err.size(), 200u) << r.err;  // no DBL_MAX spelled out in 300 digits
  }
  expect_refusal(run({kTrain, "--data", MOE_SOURCE_DIR "/data/tinyshakespeare.txt", "--out", (tmp / "t").string(),
                      "--capacity-factor", "inf"}),
                 "capacity factor must be a finite number");

  const fs::path folder = tmp / "folder";
  test::copy_dir(ck, folder);
  fs::remove(folder / "config.json");
  fs::create_directory(folder / "config.json");
  expect_refusal(run(convert_args(folder, tmp / "m.moe")), (folder / "config.json").string() + "': it is a directory");

  ASSERT_EQ(run(convert_args(ck, tmp / "m.moe")).code, 0);
  const Result tiny =
      run({kInfer, "-m", (tmp / "m.moe").string(), "-p", "ROMEO:", "-n", "5", "--temp", "1e-45", "--no-stats"});
  EXPECT_EQ(tiny.code, 0) << tiny.err;
  const Result greedy =
      run({kInfer, "-m", (tmp / "m.moe").string(), "-p", "ROMEO:", "-n", "5", "--temp", "0", "--no-stats"});
  EXPECT_EQ(tiny.out, greedy.out);
  expect_refusal(run({kInfer, "-m", (tmp / "m.moe").string(), "--bench", "--bench-probe-mib", "65536"}), "65536");
}

// ---- 4. inputs that are FIFOs -------------------------------------------------------------

TEST(HostileInput, FifosAreRefusedInsteadOfHanging) {
  test::TempDir tmp;
  ASSERT_EQ(mkfifo((tmp / "fifo").c_str(), 0644), 0);
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.json"}) {
    const fs::path ck = tmp / (std::string("ck-") + file);
    test::copy_dir(test::fixture_dir("makemoe-tiny"), ck);
    fs::remove(ck / file);
    ASSERT_EQ(mkfifo((ck / file).c_str(), 0644), 0);
    expect_refusal(run(convert_args(ck, tmp / "out.moe")), "a FIFO");
  }
  const fs::path sharded = tmp / "sharded";
  test::copy_dir(test::fixture_dir("mixtral-tiny-a"), sharded);
  ASSERT_EQ(mkfifo((sharded / "model.safetensors.index.json").c_str(), 0644), 0);
  expect_refusal(run(convert_args(sharded, tmp / "out.moe")), "a FIFO");

  expect_refusal(run({kInfer, "--model", (tmp / "fifo").string(), "--ids", "1", "-n", "1"}), "a FIFO");
  expect_refusal(run({kMerge, "--config", (tmp / "fifo").string(), "--out", (tmp / "m").string()}), "a FIFO");
  expect_refusal(run({kMerge, "--config", "/dev/zero", "--out", (tmp / "m").string()}), "a character device");
  expect_refusal(run({kTrain, "--data", (tmp / "fifo").string(), "--out", (tmp / "t").string()}), "a FIFO");
  EXPECT_FALSE(fs::exists(tmp / "out.moe"));
}

// ---- 8, 9, 10. a model replaced while running, output that cannot be written, threads ----

// MappedFile::read (moe_infer --load read): slices of whole huge pages read on several
// threads give the file byte for byte, in memory aligned to a huge page, whether the
// threads outnumber the pages or not.
TEST(HostileRun, AFileReadOnSeveralThreadsIsTheFileByteForByte) {
  test::TempDir tmp;
  std::string bytes(5 * kHugePageBytes + 123, '\0');
  uint32_t x = 12345;
  for (char& c : bytes) c = static_cast<char>((x = x * 1664525u + 1013904223u) >> 24);
  std::ofstream(tmp / "f.bin", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  for (const int threads : {1, 3, 16}) {
    MappedFile file;
    ASSERT_TRUE(MappedFile::read((tmp / "f.bin").c_str(), file, threads).ok()) << threads;
    ASSERT_EQ(file.size(), bytes.size());
    EXPECT_TRUE(file.owned());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(file.data()) % kHugePageBytes, 0u);
    EXPECT_EQ(std::memcmp(file.data(), bytes.data(), bytes.size()), 0) << threads << " threads";
  }
  MappedFile empty;
  std::ofstream(tmp / "empty.bin").close();
  const Error e = MappedFile::read((tmp / "empty.bin").c_str(), empty, 4);
  EXPECT_EQ(e.code, ErrorCode::not_a_model) << e.what();
}

// Mapped (the default, --load map), a file truncated under the run stops it with a
// message; read into memory (--load read, or its old spelling --no-mmap) it runs on.
TEST(HostileRun, AModelTruncatedWhileRunningGivesAMessageAndAReadModelIsImmune) {
  test::TempDir tmp;
  ASSERT_EQ(run(convert_args(test::fixture_dir("makemoe-tiny"), tmp / "model.moe")).code, 0);
  const std::vector<std::vector<std::string>> loads = {{}, {"--load", "map"}, {"--load", "read"}, {"--no-mmap"}};
  for (const std::vector<std::string>& load : loads) {
    const bool mmap = load.empty() || load.back() == "map";
    SCOPED_TRACE(load.empty() ? "default" : load.back());
    fs::copy_file(tmp / "model.moe", tmp / "live.moe", fs::copy_options::overwrite_existing);
    std::vector<std::string> argv = {kInfer,  "-m",        (tmp / "live.moe").string(), "-p", "ROMEO:", "-n",
                                     "20000", "--no-stats"};
    argv.insert(argv.end(), load.begin(), load.end());
    // Truncated once the program has read the model and echoed the prompt: what a user's
    // `cp new.moe live.moe` does first, while the old model is generating.
    const auto truncate = [&] { fs::resize_file(tmp / "live.moe", 0); };
    // The read copy runs on (under the sanitizers it may still be running when we stop it).
    const Result r = test::run_program_killed_after(argv, mmap ? kHang : 3'000'000, truncate);
    EXPECT_EQ(fs::file_size(tmp / "live.moe"), 0u) << "the program ended before it printed anything";
    if (mmap) {
      EXPECT_EQ(r.code, 1) << r.err;
      EXPECT_NE(r.err.find("the model file changed or shrank while in use"), std::string::npos) << r.err;
    } else {
      EXPECT_TRUE(r.code == 0 || r.killed()) << r.code << ": " << r.err;
      EXPECT_EQ(r.err.find("changed or shrank"), std::string::npos) << r.err;
    }
  }
}

TEST(HostileRun, OutputThatCannotBeWrittenIsAnError) {
  test::TempDir tmp;
  ASSERT_EQ(run(convert_args(test::fixture_dir("makemoe-tiny"), tmp / "model.moe")).code, 0);
  const std::string infer = kInfer + " -m " + (tmp / "model.moe").string() + " -p ROMEO: -n 50 --no-stats";
  for (const char* redirect : {" > /dev/full", " >&-"}) {
    const Result r = run({"/bin/sh", "-c", "exec " + infer + redirect});
    EXPECT_EQ(r.code, 1) << redirect << ": " << r.err;
    EXPECT_NE(r.err.find("cannot write the output"), std::string::npos) << redirect << ": " << r.err;
  }
}

TEST(HostileRun, TrainThreadsOutsideItsRangeAreRefused) {
  test::TempDir tmp;
  for (const char* n : {"0", "-1", "100000"})
    expect_refusal(run({kTrain, "--data", MOE_SOURCE_DIR "/data/tinyshakespeare.txt", "--out", (tmp / "t").string(),
                        "--threads", n}),
                   "--threads");
  EXPECT_FALSE(fs::exists(tmp / "t"));
}

// ---- 12. moe_train interrupted ------------------------------------------------------------

TEST(HostileRun, InterruptedTrainingSavesEverythingAndSaysHowToResume) {
  test::TempDir tmp;
  for (const auto& [signal, code] : {std::pair<const char*, const char*>{"INT", "130"}, {"TERM", "143"}}) {
    const fs::path out = tmp / signal;
    const std::string train =
        kTrain + " --preset tiny --data " MOE_SOURCE_DIR "/data/tinyshakespeare.txt --steps 100000 --out " +
        out.string() + " --threads 1";
    const Result r =
        run({"/bin/sh", "-c", train + " & pid=$!; sleep 3; kill -" + signal + " $pid; wait $pid; echo \"exit=$?\""});
    EXPECT_NE(r.out.find(std::string("exit=") + code), std::string::npos) << r.out << r.err;
    EXPECT_NE(r.out.find("resume with: moe_train --out " + out.string() + " --resume"), std::string::npos) << r.out;
    for (const char* file : {"train_state.bin", "model.safetensors", "config.json", "loss.svg", "metrics.csv"})
      EXPECT_TRUE(fs::exists(out / file)) << signal << ": " << file;
  }
  // Diverging before any state was saved: the message does not send the user to one.
  const Result r = run({kTrain, "--preset", "tiny", "--data", MOE_SOURCE_DIR "/data/tinyshakespeare.txt", "--out",
                        (tmp / "lr").string(), "--lr", "1e30", "--steps", "5"});
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.err.find("train_state.bin"), std::string::npos) << r.err;
  expect_refusal(run({kTrain, "--preset", "tiny", "--data", MOE_SOURCE_DIR "/data/tinyshakespeare.txt", "--out",
                      (tmp / "inf").string(), "--lr", "inf"}),
                 "learning rate must be a finite number");
}

// ---- 3. recipe bombs ----------------------------------------------------------------------

void expect_recipe_refused(const std::string& name, const std::string& text, const std::string& why) {
  test::TempDir tmp;
  write_text(tmp / name, text);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    merge::load_recipe(tmp / name);
    ADD_FAILURE() << name << " was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << name;
}

TEST(HostileRecipe, AliasCyclesBombsAndDeepNestingAreRefused) {
  expect_recipe_refused("cycle.yaml", "merge_method: linear\nmodels: &m [ {model: a}, *m ]\n",
                        "a YAML alias refers to a node that contains it");
  std::ostringstream laughs;  // nine levels of ten aliases each: 10^9 values once expanded
  laughs << "merge_method: linear\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 9; ++i) {
    laughs << 'a' << i << ": &a" << i << " [";
    for (int k = 0; k < 10; ++k) laughs << (k ? ", " : "") << "*a" << i - 1;
    laughs << "]\n";
  }
  expect_recipe_refused("laughs.yaml", laughs.str(), "expands to more than");
  expect_recipe_refused("deep.json", std::string(200000, '[') + std::string(200000, ']'), "nests deeper than");
  expect_recipe_refused("deep.yaml", std::string(5000, '[') + std::string(5000, ']'), "nests deeper than");
  std::string huge = "# ";
  huge.append(merge::kMaxRecipeBytes, 'x');
  expect_recipe_refused("huge.yaml", huge, "more than the 1 MiB");
}

// ---- 13. safetensors headers --------------------------------------------------------------

void write_safetensors_with_header(const fs::path& p, const std::string& header, size_t data_bytes) {
  std::string bytes(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i) & 0xff);
  bytes += header;
  bytes += std::string(data_bytes, '\0');
  write_text(p, bytes);
}

void expect_safetensors_refused(const std::string& header, size_t data_bytes, const std::string& why) {
  test::TempDir tmp;
  write_safetensors_with_header(tmp / "model.safetensors", header, data_bytes);
  try {
    converter::SafetensorsFile f(tmp / "model.safetensors");
    ADD_FAILURE() << "accepted: " << header.substr(0, 200);
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

TEST(HostileSafetensors, DuplicateNamesOverlapsAndHugeHeadersAreRefused) {
  const std::string t = R"({"dtype": "F32", "shape": [2], "data_offsets": )";
  expect_safetensors_refused("{\"w\": " + t + "[0, 8]}, \"w\": " + t + "[8, 16]}}", 16, "names tensor 'w' twice");
  expect_safetensors_refused("{\"a\": " + t + "[0, 8]}, \"b\": " + t + "[4, 12]}}", 16, "overlap");
  std::string huge = "{\"__metadata__\": {\"pad\": \"";
  huge.append(converter::kMaxSafetensorsHeader, ' ');
  huge.append("\"}}");
  expect_safetensors_refused(huge, 0, "MiB is read");
  // The same shapes, side by side, are fine.
  test::TempDir tmp;
  write_safetensors_with_header(tmp / "ok.safetensors", "{\"a\": " + t + "[0, 8]}, \"b\": " + t + "[8, 16]}}", 16);
  EXPECT_EQ(converter::SafetensorsFile(tmp / "ok.safetensors").tensors().size(), 2u);
}

}  // namespace
}  // namespace moe
