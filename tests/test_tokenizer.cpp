// Real tokenizers (tests/fixtures/tokenizers: Mistral's SentencePiece-style BPE and Qwen3's
// byte-level BPE) against the ids and text Hugging Face's own implementation gives
// (cases.json, written by @huggingface/tokenizers): exact, both directions.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string_view>
#include <random>
#include <sstream>

#include "converter/input_error.hpp"
#include "converter/tokenizer_json.hpp"
#include "moe/text/bpe_check.hpp"
#include "moe/text/stream_decoder.hpp"
#include "support/test_support.hpp"

namespace moe::test {
namespace {

using nlohmann::json;

// A tokenizer read from a fixture directory, as moe_convert stores it, and its view.
struct Loaded {
  std::vector<uint8_t> buffer;
  AlignedBuffer aligned;
  text::BpeTokenizer tok;
};
Loaded load_uncached(const std::filesystem::path& dir, int vocab_size) {
  Loaded l;
  l.buffer = converter::bpe_tokenizer_buffer(converter::read_hf_tokenizer(dir, vocab_size));
  l.aligned = AlignedBuffer(l.buffer);
  const auto* t = flatbuffers::GetRoot<fb::Tokenizer>(l.aligned.data());
  const Error e = text::check_bpe_tokenizer(t, vocab_size, l.tok);
  EXPECT_FALSE(e) << e.what();
  return l;
}
// Each fixture's tokenizer is read once per run (Qwen3's tokenizer.json is 11 MB).
const Loaded& load(const std::filesystem::path& dir, int vocab_size = 1 << 20) {
  static std::map<std::string, std::unique_ptr<Loaded>> loaded;
  auto& slot = loaded[dir.string() + "|" + std::to_string(vocab_size)];
  if (!slot) slot = std::make_unique<Loaded>(load_uncached(dir, vocab_size));
  return *slot;
}

std::vector<int32_t> encode(const text::BpeTokenizer& tok, const std::string& s, bool special) {
  std::vector<uint8_t> scratch(tok.encode_scratch_bytes(s.size()));
  std::vector<int32_t> ids(s.size() + 16);
  int n = 0;
  const Error e = tok.encode(s.data(), s.size(), special, ids.data(), static_cast<int>(ids.size()), n, scratch.data(),
                             scratch.size());
  EXPECT_FALSE(e) << e.what();
  ids.resize(static_cast<size_t>(n));
  return ids;
}

std::string decode(const text::BpeTokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  size_t cap = text::StreamDecoder::kSlack;
  for (const int32_t id : ids) {
    size_t n;
    tok.decoded(id, n);
    cap += 3 * n + text::StreamDecoder::kSlack;
  }
  std::string out(cap, '\0');
  size_t len = 0;
  const Error e = text::decode_text(tok, ids.data(), static_cast<int>(ids.size()), skip_special, out.data(), cap, len);
  EXPECT_FALSE(e) << e.what();
  out.resize(len);
  return out;
}

json cases(const std::string& name, const char* file = "cases.json") {
  std::ifstream in(fixture_dir("tokenizers/" + name + "/" + file));
  return json::parse(in)["cases"];
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class RealTokenizer : public ::testing::TestWithParam<const char*> {};

TEST_P(RealTokenizer, EncodesEveryCaseExactly) {
  const Loaded& l = load(fixture_dir(std::string("tokenizers/") + GetParam()));
  for (const json& c : cases(GetParam())) {
    const std::string text = c["text"];
    EXPECT_EQ(encode(l.tok, text, false), c["ids"].get<std::vector<int32_t>>()) << json(text).dump();
    EXPECT_EQ(encode(l.tok, text, true), c["ids_with_special"].get<std::vector<int32_t>>()) << json(text).dump();
  }
}

TEST_P(RealTokenizer, DecodesEveryCaseExactly) {
  const Loaded& l = load(fixture_dir(std::string("tokenizers/") + GetParam()));
  for (const json& c : cases(GetParam())) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(decode(l.tok, ids, false), c["decoded"].get<std::string>()) << c["text"].dump();
    EXPECT_EQ(decode(l.tok, ids, true), c["decoded_skip_special"].get<std::string>()) << c["text"].dump();
  }
}

// 1,500 random mixes of scripts, whitespace runs, contractions, combining marks, special
// tokens and control characters, with the reference's ids (cases_random.json).
TEST_P(RealTokenizer, EncodesAndDecodesRandomMixesExactly) {
  const Loaded& l = load(fixture_dir(std::string("tokenizers/") + GetParam()));
  const json all = cases(GetParam(), "cases_random.json");
  ASSERT_GE(all.size(), 1000u);
  int wrong = 0;
  for (const json& c : all) {
    const std::string text = c["text"];
    const bool ok =
        encode(l.tok, text, false) == c["ids"].get<std::vector<int32_t>>() &&
        encode(l.tok, text, true) == c["ids_with_special"].get<std::vector<int32_t>>() &&
        decode(l.tok, c["ids"].get<std::vector<int32_t>>(), false) == c["decoded"].get<std::string>() &&
        decode(l.tok, c["ids"].get<std::vector<int32_t>>(), true) == c["decoded_skip_special"].get<std::string>();
    if (!ok && ++wrong <= 5) ADD_FAILURE() << json(text).dump();
  }
  EXPECT_EQ(wrong, 0);
}

// All of tiny Shakespeare, whole and line by line, comes back as it was.
TEST_P(RealTokenizer, RoundTripsTinyShakespeare) {
  const Loaded& l = load(fixture_dir(std::string("tokenizers/") + GetParam()));
  const std::string text = read_text(source_dir() / "data" / "tinyshakespeare.txt");
  ASSERT_GT(text.size(), 1000000u);
  const std::vector<int32_t> ids = encode(l.tok, text, false);
  EXPECT_GT(ids.size(), text.size() / 5);
  EXPECT_LT(ids.size(), text.size() / 2);
  EXPECT_EQ(decode(l.tok, ids, false), text);
  std::istringstream lines(text);
  int checked = 0;
  for (std::string line; std::getline(lines, line) && checked < 4000; ++checked)
    ASSERT_EQ(decode(l.tok, encode(l.tok, line, false), false), line);
}

// Token by token, the streaming decoder prints exactly the whole decode, and every chunk
// it prints is whole UTF-8 (a character split across byte-level or byte-fallback tokens
// waits until it is complete).
TEST_P(RealTokenizer, StreamingDecodeIsTheWholeDecodeInWholeCharacters) {
  const Loaded& l = load(fixture_dir(std::string("tokenizers/") + GetParam()));
  int split_characters = 0;
  for (const char* file : {"cases.json", "cases_random.json"})
    for (const json& c : cases(GetParam(), file)) {
      const auto ids = c["ids"].get<std::vector<int32_t>>();
      text::StreamDecoder d(l.tok, true, false);
      std::string streamed;
      std::vector<char> out(3 * 64 + text::StreamDecoder::kSlack);
      for (const int32_t id : ids) {
        size_t n;
        l.tok.decoded(id, n);
        out.resize(3 * n + text::StreamDecoder::kSlack);
        const long k = d.put(id, out.data(), out.size());
        ASSERT_GE(k, 0);
        ASSERT_EQ(text::utf8_invalid_at(out.data(), static_cast<size_t>(k)), static_cast<size_t>(k));
        const std::string_view piece(l.tok.decoded(id, n), n);
        split_characters += text::utf8_invalid_at(piece.data(), piece.size()) != piece.size();
        streamed.append(out.data(), static_cast<size_t>(k));
      }
      out.resize(text::StreamDecoder::kSlack);
      const long k = d.finish(out.data(), out.size());
      ASSERT_GE(k, 0);
      streamed.append(out.data(), static_cast<size_t>(k));
      EXPECT_EQ(streamed, c["decoded"].get<std::string>()) << c["text"].dump();
    }
  EXPECT_GT(split_characters, 10);  // the cases do split characters across tokens
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RealTokenizer, ::testing::Values("mistral", "qwen3"));

// ---- bad input

TEST(BpeTokenizerInput, InvalidUtf8IsRefusedWithItsByteOffset) {
  const Loaded& l = load(fixture_dir("tokenizers/qwen3"));
  const std::string text =
      "ok \xc3\xa7"
      "a \xff then";
  std::vector<uint8_t> scratch(l.tok.encode_scratch_bytes(text.size()));
  std::vector<int32_t> ids(64);
  int n = -1;
  const Error e = l.tok.encode(text.data(), text.size(), false, ids.data(), 64, n, scratch.data(), scratch.size());
  EXPECT_EQ(e.code, ErrorCode::unknown_character);
  EXPECT_NE(std::string(e.what()).find("not valid UTF-8 at byte 7"), std::string::npos) << e.what();
  EXPECT_EQ(n, 0);
}

TEST(BpeTokenizerInput, TooFewIdsOrTooLittleScratchIsAnErrorNotATruncation) {
  const Loaded& l = load(fixture_dir("tokenizers/mistral"));
  const std::string text = "Hello world, how are you today?";
  std::vector<uint8_t> scratch(l.tok.encode_scratch_bytes(text.size()));
  std::vector<int32_t> ids(4);
  int n = -1;
  Error e = l.tok.encode(text.data(), text.size(), true, ids.data(), 4, n, scratch.data(), scratch.size());
  EXPECT_EQ(e.code, ErrorCode::bad_token);
  EXPECT_NE(std::string(e.what()).find("longer than 4 tokens"), std::string::npos) << e.what();
  EXPECT_EQ(n, 0);
  ids.resize(64);
  e = l.tok.encode(text.data(), text.size(), true, ids.data(), 64, n, scratch.data(), scratch.size() - 1);
  EXPECT_NE(std::string(e.what()).find("scratch"), std::string::npos) << e.what();
}

// The file's tables are checked before use: a damaged byte fails the CRC, a table that
// would send the encoder out of bounds is refused even with a matching CRC.
TEST(BpeTokenizerFile, DamagedOrHostileTablesAreRefused) {
  converter::BpeTokenizerTables good = converter::read_hf_tokenizer(fixture_dir("tokenizers/mistral"), 32000);
  auto check = [](const converter::BpeTokenizerTables& t, int vocab = 32000) {
    const AlignedBuffer b(converter::bpe_tokenizer_buffer(t));
    text::BpeTokenizer tok;
    return text::check_bpe_tokenizer(flatbuffers::GetRoot<fb::Tokenizer>(b.data()), vocab, tok);
  };
  EXPECT_FALSE(check(good));
  EXPECT_NE(std::string(check(good, 31999).what()).find("32000 tokens, the model's vocabulary only 31999"),
            std::string::npos);
  {  // one byte of one piece changed in the file
    std::vector<uint8_t> bytes = converter::bpe_tokenizer_buffer(good);
    const auto* t = flatbuffers::GetRoot<fb::Tokenizer>(bytes.data());
    const size_t at = static_cast<size_t>(t->pieces()->data() - bytes.data()) + 1000;
    bytes[at] ^= 0x20;
    const AlignedBuffer b(bytes);
    text::BpeTokenizer tok;
    const Error e = text::check_bpe_tokenizer(flatbuffers::GetRoot<fb::Tokenizer>(b.data()), 32000, tok);
    EXPECT_EQ(e.code, ErrorCode::corrupt);
    EXPECT_NE(std::string(e.what()).find("CRC-32C"), std::string::npos) << e.what();
  }
  struct Case {
    const char* expect;
    std::function<void(converter::BpeTokenizerTables&)> damage;
  };
  const Case hostile[] = {
      {"piece table names a token beyond", [](auto& t) { t.piece_table[t.piece_table.size() / 2] = 40000; }},
      {"merge names a token beyond",
       [](auto& t) {
         for (auto& m : t.merges)
           if (m.left() != 0xffffffffu) {
             m = fb::MergeSlot(m.left(), 70000, m.rank(), m.merged());
             break;
           }
       }},
      {"no empty slot", [](auto& t) { std::fill(t.piece_table.begin(), t.piece_table.end(), 5u); }},
      {"piece offsets", [](auto& t) { t.piece_offsets[10] = t.piece_offsets[11] + 1; }},
      {"byte tokens", [](auto& t) { t.byte_tokens.pop_back(); }},
      {"post-processor token", [](auto& t) { t.prefix_ids = {32001}; }},
      {"regex: an unsupported group",
       [](auto& t) {
         converter::TextStepSpec s;
         s.kind = fb::TextStepKind_SplitRegex;
         s.text = "(?<=a)b";
         t.pre_tokenizers.push_back(s);
         t.needs_unicode = true;
       }},
      {"needs Unicode data",
       [](auto& t) {
         converter::TextStepSpec s;
         s.kind = fb::TextStepKind_Nfc;
         t.normalizers.push_back(s);
         t.needs_unicode = false;
       }},
  };
  for (const Case& c : hostile) {
    converter::BpeTokenizerTables t = good;
    c.damage(t);
    const Error e = check(t);
    EXPECT_TRUE(e) << c.expect;
    EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << e.what();
  }
}

// ---- tokenizer.json the converter refuses, naming the component

// A small tokenizer.json of the SentencePiece kind, edited per case.
json small_tokenizer() {
  return json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null,
    "added_tokens": [{"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false,
                      "normalized": false, "special": true}],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                   {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "pre_tokenizer": null,
    "post_processor": null,
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
              "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": false,
              "vocab": {"<unk>": 0, "\u2581": 1, "a": 2, "b": 3, "ab": 4, "\u2581ab": 5},
              "merges": ["a b", "\u2581 ab"]}})");
}

TEST(TokenizerJson, WhatCannotBeRepresentedIsRefusedByName) {
  struct Case {
    const char* expect;
    std::function<void(json&)> edit;
  };
  const Case cases[] = {
      {"model type 'Unigram' is not supported", [](json& j) { j["model"]["type"] = "Unigram"; }},
      {"normalizer 'NFKC' is not supported",
       [](json& j) {
         j["normalizer"] = {{"type", "NFKC"}};
       }},
      {"pre_tokenizer 'Whitespace' is not supported",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       }},
      {"regex: an unsupported group (?...) at offset 1",
       [](json& j) {
         j["pre_tokenizer"] = json::parse(R"({"type": "Split", "pattern": {"Regex": "(?<=a)b"}, "behavior": "Isolated",
                                             "invert": false})");
       }},
      {"behavior 'MergedWithPrevious'",
       [](json& j) {
         j["pre_tokenizer"] = json::parse(R"({"type": "Split", "pattern": {"String": " "},
                                             "behavior": "MergedWithPrevious", "invert": false})");
       }},
      {"merge 1 [\"a\",\"z\"] names token \"z\", which is not in the vocabulary",
       [](json& j) {
         j["model"]["merges"][1] = {"a", "z"};
       }},
      {"has id 99, outside the model's 64 tokens", [](json& j) { j["model"]["vocab"]["c"] = 99; }},
      {"decoder 'WordPiece' is not supported",
       [](json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       }},
      {"model option 'shuffle' is not supported", [](json& j) { j["model"]["shuffle"] = true; }},
      {"dropout", [](json& j) { j["model"]["dropout"] = 0.1; }},
      {"single_word: true", [](json& j) { j["added_tokens"][0]["single_word"] = true; }},
      {"post_processor 'RobertaProcessing' is not supported",
       [](json& j) {
         j["post_processor"] = {{"type", "RobertaProcessing"}};
       }},
      {"tokenizer.json option 'extra' is not supported", [](json& j) { j["extra"] = 1; }},
  };
  for (const Case& c : cases) {
    TempDir dir;
    json j = small_tokenizer();
    c.edit(j);
    std::ofstream(dir / "tokenizer.json") << j.dump();
    try {
      converter::read_hf_tokenizer(dir.path(), 64);
      ADD_FAILURE() << "accepted: " << c.expect;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << e.what();
    }
  }
  {  // not JSON, and too large to read (refused before a byte is read)
    TempDir dir;
    std::ofstream(dir / "tokenizer.json") << "{\"model\": ";
    EXPECT_THROW(converter::read_hf_tokenizer(dir.path(), 64), InputError);
    std::filesystem::resize_file(dir / "tokenizer.json", (size_t{64} << 20) + 1);
    try {
      converter::read_hf_tokenizer(dir.path(), 64);
      ADD_FAILURE() << "a 64 MiB tokenizer.json was read";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
    }
  }
}

// The small tokenizer by hand: "ab ab" -> ▁ab (merges a+b, then ▁+ab), ▁ab; a character
// the vocabulary lacks is <unk>, and a run of them one <unk> (fuse_unk).
TEST(TokenizerJson, SmallTokenizerMergesByRankAndFusesUnknowns) {
  TempDir dir;
  std::ofstream(dir / "tokenizer.json") << small_tokenizer().dump();
  const Loaded l = load_uncached(dir.path(), 64);
  EXPECT_EQ(encode(l.tok, "ab ab", false), (std::vector<int32_t>{5, 5}));
  EXPECT_EQ(encode(l.tok, "ab xyz", false), (std::vector<int32_t>{5, 1, 0}));
  EXPECT_EQ(encode(l.tok, "ba", false), (std::vector<int32_t>{1, 3, 2}));
  EXPECT_EQ(decode(l.tok, {5, 1, 2, 3}, false), "ab ab");  // the leading space stripped
}

// ---- the regex subset, against what the reference's JavaScript regexes match

TEST(PreTokenizerRegex, MatchesAsTheReferenceDoes) {
  const Loaded& l = load(fixture_dir("tokenizers/qwen3"));  // for its Unicode tables
  const auto u = l.tok.unicode();
  struct Case {
    const char* pattern;
    const char* text;
    size_t from, start, end;
  };
  const Case cases[] = {
      {"\\s+(?!\\S)|\\s+", "a   b", 1, 1, 3},  // leaves one space for " b"
      {"(?i:'s|'t|'re)", "x'RE", 0, 1, 4},
      {"\\p{N}{1,3}", "a12345", 0, 1, 4},
      {"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+", "1 héllo", 0, 1, 8},
      {"a+?", "aaa", 0, 0, 1},
      {"a+", "baaa", 0, 1, 4},
      {"(ab)?c", "abc", 0, 0, 3},
      {"x$", "x\ny", 0, 0, 1},
      {"^y", "x\ny", 0, 2, 3},
      {"[\\u4e00-\\u9fa5]+", "ab中文c", 0, 2, 8},
      {"\\P{L}+", "ab12 c", 0, 2, 5},
  };
  for (const Case& c : cases) {
    text::Regex r;
    ASSERT_FALSE(r.compile(c.pattern, std::strlen(c.pattern), false)) << c.pattern;
    size_t start = 0, end = 0;
    ASSERT_TRUE(r.find(c.text, std::strlen(c.text), c.from, u, start, end)) << c.pattern;
    EXPECT_EQ(start, c.start) << c.pattern;
    EXPECT_EQ(end, c.end) << c.pattern;
  }
  {  // a pattern built to backtrack exponentially is stopped, and says so
    std::string pattern, text;
    for (int i = 0; i < 22; ++i) pattern.append("(a|a)?"), text.append("a");
    pattern.append("b");
    text.append("c");
    text::Regex r;
    ASSERT_FALSE(r.compile(pattern.data(), pattern.size(), false));
    size_t start = 0, end = 0;
    EXPECT_FALSE(r.find(text.data(), text.size(), 0, u, start, end));
    EXPECT_TRUE(r.exhausted());
  }
  for (const char* bad : {"(?<=a)b", "(ab)+", "a{2,1}", "[a-", "\\q", "\\p{Foo}", "a)", "*a"}) {
    text::Regex r;
    EXPECT_TRUE(r.compile(bad, std::strlen(bad), false)) << bad;
  }
}

}  // namespace
}  // namespace moe::test
