// Real tokenizers through the programs, as a user runs them: moe_tokenize's interface
// (which other tools script against), and moe_infer prompted with text on a model whose
// checkpoint carries a Hugging Face tokenizer.json (random weights: the text is noise,
// the mechanism is what is checked).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "converter/checkpoint_writer.hpp"
#include "support/test_support.hpp"

namespace moe {
namespace {

using nlohmann::json;
using Result = test::ProgramResult;
const auto run = test::run_program;

const std::string kConvert = MOE_CONVERT_PATH, kInfer = MOE_INFER_PATH, kTokenize = MOE_TOKENIZE_PATH;
constexpr const char* kMistralKey = "llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v32000-c256";

void expect_failure(const Result& r, int code, const std::string& text) {
  EXPECT_EQ(r.code, code) << r.err;
  EXPECT_NE(r.err.find(text), std::string::npos) << "stderr: " << r.err;
}

std::string tokenizer_dir(const char* name) { return test::fixture_dir(std::string("tokenizers/") + name).string(); }

// A random Mixtral-layout checkpoint with Mistral's tokenizer, converted once.
class TokenizerCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    ModelConfig config;
    ASSERT_TRUE(try_parse_config_key(kMistralKey, config));
    const auto ck = *dir_ / "mistral-random";
    converter::write_random_checkpoint(ck, config, 3);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      std::filesystem::copy_file(std::filesystem::path(tokenizer_dir("mistral")) / f, ck / f);
    const Result r = run({kConvert, ck.string(), "-o", path("mistral.moe"), "-q"});
    ASSERT_EQ(r.code, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string path(const char* name) { return (*dir_ / name).string(); }
  static test::TempDir* dir_;
};
test::TempDir* TokenizerCli::dir_ = nullptr;

TEST_F(TokenizerCli, TokenizeJsonIsExactlyTheInterface) {
  // ids from the reference (cases.json), pieces as tokenizer.json spells them
  Result r = run({kTokenize, "--tokenizer", tokenizer_dir("mistral"), "--text", "Hello world", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"ids\": [1, 22557, 1526], \"pieces\": [\"<s>\", \"\u2581Hello\", \"\u2581world\"]}\n");
  r = run({kTokenize, "--model", path("mistral.moe"), "--text", "Hello world", "--json", "--no-special"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["ids"], json::parse("[22557, 1526]"));
  r = run({kTokenize, "--tokenizer", tokenizer_dir("qwen3"), "--text", " Hello world", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"ids\": [21927, 1879], \"pieces\": [\"\u0120Hello\", \"\u0120world\"]}\n");
  r = run({kTokenize, "--tokenizer", tokenizer_dir("mistral"), "--decode", "22557,1526", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"text\": \"Hello world\"}\n");
  r = run({kTokenize, "--model", path("mistral.moe"), "--decode", "22557,1526"});
  EXPECT_EQ(r.out, "Hello world\n");
}

// Every case of the reference through --file, from the checkpoint and from the .moe file.
TEST_F(TokenizerCli, TokenizeFileMatchesTheReferenceFromBothSources) {
  std::ifstream in(std::filesystem::path(tokenizer_dir("mistral")) / "cases.json");
  const json cases = json::parse(in)["cases"];
  int checked = 0;
  for (const json& c : cases) {
    if (c["text"].get<std::string>().empty() || ++checked > 8) continue;
    const auto text_file = *dir_ / "text.txt";
    std::ofstream(text_file, std::ios::binary) << c["text"].get<std::string>();
    for (const std::vector<std::string>& source :
         {std::vector<std::string>{"--tokenizer", tokenizer_dir("mistral")}, {"--model", path("mistral.moe")}}) {
      std::vector<std::string> argv{kTokenize, source[0], source[1], "--file", text_file.string(), "--json"};
      const Result r = run(argv);
      ASSERT_EQ(r.code, 0) << r.err;
      EXPECT_EQ(json::parse(r.out)["ids"], c["ids_with_special"]) << c["text"];
    }
  }
}

TEST_F(TokenizerCli, TokenizeRefusesBadInput) {
  expect_failure(run({kTokenize, "--text", "x"}), 2, "give --tokenizer CHECKPOINT_DIR or --model m.moe");
  expect_failure(run({kTokenize, "--tokenizer", tokenizer_dir("mistral")}), 2, "give --text T, --file F or --decode");
  expect_failure(run({kTokenize, "--tokenizer", "/no/such/dir", "--text", "x"}), 1,
                 "has no Hugging Face tokenizer.json");
  expect_failure(run({kTokenize, "--tokenizer", tokenizer_dir("mistral"), "--decode", "1,x"}), 1,
                 "'x' is not a token id");
  expect_failure(run({kTokenize, "--tokenizer", tokenizer_dir("mistral"), "--decode", "40000"}), 1,
                 "outside the tokenizer's 32000 tokens");
  expect_failure(run({kTokenize, "--tokenizer", tokenizer_dir("mistral"), "--text", "a\xff"}), 1,
                 "not valid UTF-8 at byte 1");
}

// The text moe_infer prints is the prompt, then exactly what the tokenizer decodes the
// generated ids to (the same ids --ids gives for the encoded prompt).
TEST_F(TokenizerCli, InferPromptedWithTextStreamsTheDecodedContinuation) {
  const std::string prompt = "The capital of France is";
  Result ids = run({kTokenize, "--model", path("mistral.moe"), "--text", prompt, "--json"});
  ASSERT_EQ(ids.code, 0) << ids.err;
  std::string id_list;
  const json encoded = json::parse(ids.out);
  for (const json& id : encoded["ids"]) {
    if (!id_list.empty()) id_list.append(",");
    id_list.append(id.dump());
  }
  const Result by_ids = run(
      {kInfer, "-m", path("mistral.moe"), "--ids", id_list, "-n", "12", "--temp", "0", "--no-stats", "--ignore-eos"});
  ASSERT_EQ(by_ids.code, 0) << by_ids.err;
  const Result by_text = run(
      {kInfer, "-m", path("mistral.moe"), "--prompt", prompt, "-n", "12", "--temp", "0", "--no-stats", "--ignore-eos"});
  ASSERT_EQ(by_text.code, 0) << by_text.err;
  // by_ids prints "p1,...,pn,c1,...,c12": decode the prompt's text ids and the continuation
  const std::string all = by_ids.out.substr(0, by_ids.out.find('\n'));
  const std::string without_bos = all.substr(all.find(',') + 1);
  const Result decoded = run({kTokenize, "--model", path("mistral.moe"), "--decode", without_bos});
  ASSERT_EQ(decoded.code, 0) << decoded.err;
  EXPECT_EQ(by_text.out, decoded.out);  // both end with one newline
  EXPECT_EQ(by_text.out.rfind(prompt, 0), 0u) << by_text.out;
}

TEST_F(TokenizerCli, InferPromptFromFileAndStdinAndChatFormats) {
  const auto file = *dir_ / "prompt.txt";
  std::ofstream(file) << "Hello there";
  const Result from_file =
      run({kInfer, "-m", path("mistral.moe"), "--prompt-file", file.string(), "-n", "4", "--temp", "0", "--no-stats"});
  ASSERT_EQ(from_file.code, 0) << from_file.err;
  std::string pipe = "printf 'Hello there' | '";
  pipe.append(kInfer).append("' -m '").append(path("mistral.moe")).append("' -p - -n 4 --temp 0 --no-stats");
  const Result from_stdin = run({"/bin/sh", "-c", pipe});
  ASSERT_EQ(from_stdin.code, 0) << from_stdin.err;
  EXPECT_EQ(from_file.out, from_stdin.out);
  EXPECT_EQ(from_file.out.rfind("Hello there", 0), 0u);
  // Mistral's fixture config has no chat template: say so; a named one wraps the prompt.
  expect_failure(run({kInfer, "-m", path("mistral.moe"), "--prompt", "Hi", "--chat"}), 2,
                 "no chat template moe_infer knows; give --chat-template NAME (chatml, mistral, granite, tulu)");
  expect_failure(run({kInfer, "-m", path("mistral.moe"), "--prompt", "Hi", "--chat", "--chat-template", "alpaca"}), 2,
                 "--chat-template 'alpaca' is not known");
  const Result chat = run({kInfer, "-m", path("mistral.moe"), "--prompt", "Hi", "--chat", "--chat-template", "mistral",
                           "-n", "2", "--temp", "0", "--no-stats"});
  ASSERT_EQ(chat.code, 0) << chat.err;
  EXPECT_EQ(chat.out.rfind("[INST] Hi [/INST]", 0), 0u) << chat.out;
}

TEST_F(TokenizerCli, InferRefusesBadPromptsBeforeAnyWork) {
  expect_failure(run({kInfer, "-m", path("mistral.moe"), "--prompt",
                      "ok \xc3\xa7"
                      "a \xff"}),
                 2, "not valid UTF-8 at byte 7");
  std::string long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt.append(" word");
  const Result r = run({kInfer, "-m", path("mistral.moe"), "--prompt", long_prompt, "-n", "4"});
  expect_failure(r, 2, "more than the model's context of 256");
  EXPECT_EQ(r.out, "");  // nothing echoed, nothing generated
  expect_failure(run({kInfer, "-m", path("mistral.moe"), "--prompt-file", "/no/such/file"}), 2, "cannot open");
}

// Generation stops at the model's end-of-sequence token, or goes on with --ignore-eos: a
// copy of the checkpoint whose config.json names the first greedy token as EOS.
TEST_F(TokenizerCli, GenerationStopsAtEosUnlessIgnored) {
  const Result first = run({kInfer, "-m", path("mistral.moe"), "--prompt", "Once upon", "-n", "1", "--temp", "0",
                            "--no-stats", "--no-echo"});
  ASSERT_EQ(first.code, 0) << first.err;
  const Result as_ids = run(
      {kInfer, "-m", path("mistral.moe"), "--ids", "1,5713,3714", "-n", "1", "--temp", "0", "--no-stats", "--no-echo"});
  ASSERT_EQ(as_ids.code, 0) << as_ids.err;
  const int eos = std::stoi(as_ids.out);
  const auto ck = *dir_ / "mistral-eos";
  test::copy_dir(*dir_ / "mistral-random", ck);
  json config = json::parse(test::read_file(ck / "config.json"));
  config["eos_token_id"] = eos;
  std::ofstream(ck / "config.json") << config.dump();
  ASSERT_EQ(run({kConvert, ck.string(), "-o", path("eos.moe"), "-q"}).code, 0);
  const Result stops =
      run({kInfer, "-m", path("eos.moe"), "--ids", "1,5713,3714", "-n", "8", "--temp", "0", "--no-echo"});
  ASSERT_EQ(stops.code, 0) << stops.err;
  EXPECT_NE(stops.err.find("generation 1 tok"), std::string::npos) << stops.err;
  const Result goes_on = run(
      {kInfer, "-m", path("eos.moe"), "--ids", "1,5713,3714", "-n", "8", "--temp", "0", "--no-echo", "--ignore-eos"});
  EXPECT_NE(goes_on.err.find("generation 8 tok"), std::string::npos) << goes_on.err;
}

// A random Qwen3-MoE with Qwen3's tokenizer: its tokenizer_config.json names the ChatML
// template, which --chat applies (no BOS: Qwen has none).
TEST_F(TokenizerCli, InferChatUsesTheModelsChatMlTemplate) {
  ModelConfig config;
  ASSERT_TRUE(try_parse_config_key("llama-d32-l2-h4-kv2-hd8-e4-k2-f64-v151936-c256-qkh", config));
  const auto ck = *dir_ / "qwen3-random";
  converter::RandomCheckpointOptions options;
  options.layout = converter::layout_for_model_type("qwen3_moe");
  options.dtype = "BF16";
  converter::write_random_checkpoint(ck, config, 4, {}, options);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    std::filesystem::copy_file(std::filesystem::path(tokenizer_dir("qwen3")) / f, ck / f);
  ASSERT_EQ(run({kConvert, ck.string(), "-o", path("qwen3.moe"), "-q"}).code, 0);
  const Result chat = run({kInfer, "-m", path("qwen3.moe"), "--prompt", "Hi", "--chat", "-n", "2", "--temp", "0",
                           "--no-stats", "--ignore-eos"});
  ASSERT_EQ(chat.code, 0) << chat.err;
  EXPECT_EQ(chat.out.rfind("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", 0), 0u) << chat.out;
  const Result ids = run({kTokenize, "--model", path("qwen3.moe"), "--text",
                          "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "--json"});
  EXPECT_EQ(json::parse(ids.out)["ids"], json::parse("[151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]"));
}

}  // namespace
}  // namespace moe
