// moe_tokenize: what a model's tokenizer makes of a text (the tool to reach for when
// output looks wrong), from a checkpoint's tokenizer.json or from a converted .moe file.
//
//   moe_tokenize (--tokenizer CHECKPOINT_DIR | --model m.moe) (--text T | --file F) [--no-special] [--json]
//   moe_tokenize (--tokenizer CHECKPOINT_DIR | --model m.moe) --decode 1,2,3 [--json]
//
// Encoding adds the post-processor's tokens (BOS, ...) as the tokenizer config says,
// unless --no-special. Prints one token per line (id and piece, as tokenizer.json spells
// it), or with --json one object {"ids": [...], "pieces": [...]} / {"text": "..."}.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "converter/input_error.hpp"
#include "converter/input_file.hpp"
#include "converter/tokenizer_json.hpp"
#include "moe/model_file.hpp"
#include "moe/text/bpe_check.hpp"
#include "moe/text/stream_decoder.hpp"
#include "platform/mapped_file.hpp"
#include "tools/arg_parser.hpp"
#include "tools/token_ids.hpp"

namespace {

using nlohmann::json;

struct Options {
  std::string tokenizer, model, text, file, decode;
  bool special = true, as_json = false;
};

// The JSON string for text that may hold bytes that are not UTF-8 (shown as U+FFFD).
std::string json_text(const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::replace); }

int run(const Options& o) {
  // The tokenizer: built from tokenizer.json, or the one in a .moe file.
  std::vector<uint8_t> built;
  moe::MappedFile map;
  moe::ModelFile file;
  moe::text::BpeTokenizer tok;
  const moe::CharTokenizer* chars = nullptr;
  if (!o.tokenizer.empty()) {
    if (!moe::converter::has_hf_tokenizer(o.tokenizer))
      throw moe::InputError("'" + o.tokenizer + "' has no Hugging Face tokenizer.json");
    built = moe::converter::bpe_tokenizer_buffer(moe::converter::read_hf_tokenizer(o.tokenizer, 0x3fffffff));
    if (moe::Error e =
            moe::text::check_bpe_tokenizer(flatbuffers::GetRoot<moe::fb::Tokenizer>(built.data()), 0x3fffffff, tok))
      throw moe::InputError(e.what());
  } else {
    moe::converter::note_input(o.model);
    if (moe::Error e = moe::MappedFile::open(o.model.c_str(), map)) throw moe::InputError(e.what());
    moe::OpenOptions options;
    options.verify_checksums = false;  // only the tokenizer is used
    if (moe::Error e = moe::ModelFile::open(map.data(), map.size(), file, options))
      throw moe::InputError("'" + o.model + "': " + e.what());
    tok = file.bpe_tokenizer();
    if (!tok.present()) {
      if (!file.tokenizer().present()) throw moe::InputError("'" + o.model + "' has no tokenizer: it takes token ids");
      chars = &file.tokenizer();
    }
  }
  auto piece_of = [&](int32_t id) {
    if (chars != nullptr) {
      char u[4];
      return std::string(u, static_cast<size_t>(chars->decode(id, u)));
    }
    return moe::converter::piece_text(tok, id);
  };
  const int n_tokens = chars ? chars->size() : tok.size();

  if (!o.decode.empty()) {
    std::vector<int32_t> ids;
    if (std::string error; !moe::tools::parse_token_ids(o.decode, "--decode", ids, error)) throw moe::InputError(error);
    std::string text;
    for (const int32_t id : ids)
      if (id >= n_tokens)
        throw moe::InputError("--decode: token " + std::to_string(id) + " is outside the tokenizer's " +
                              std::to_string(n_tokens) + " tokens");
    if (chars != nullptr) {
      for (const int32_t id : ids) text += piece_of(id);
    } else {
      size_t cap = moe::text::StreamDecoder::kSlack;
      for (const int32_t id : ids) {
        size_t n;
        tok.decoded(id, n);
        cap += 3 * n + moe::text::StreamDecoder::kSlack;
      }
      text.resize(cap);
      size_t len = 0;
      if (moe::Error e =
              moe::text::decode_text(tok, ids.data(), static_cast<int>(ids.size()), false, text.data(), cap, len))
        throw moe::InputError(e.what());
      text.resize(len);
    }
    if (o.as_json) std::printf("{\"text\": %s}\n", json_text(text).c_str());
    else std::printf("%s\n", text.c_str());
    return 0;
  }

  // Encoding needs scratch in proportion to the text (a SentencePiece text is one word):
  // larger files are refused before anything is read.
  const std::string text =
      o.file.empty() ? o.text : moe::converter::read_input_file(o.file, size_t{16} << 20, "text file");
  std::vector<int32_t> ids(2 * text.size() + 64);  // at most a token per byte, and one per piece
  int n = 0;
  if (chars != nullptr) {
    if (moe::Error e = chars->encode(text.data(), text.size(), ids.data(), static_cast<int>(ids.size()), n))
      throw moe::InputError(e.what());
  } else {
    std::vector<uint8_t> scratch(tok.encode_scratch_bytes(text.size()));
    if (moe::Error e = tok.encode(text.data(), text.size(), o.special, ids.data(), static_cast<int>(ids.size()), n,
                                  scratch.data(), scratch.size()))
      throw moe::InputError(e.what());
  }
  ids.resize(static_cast<size_t>(n));
  if (o.as_json) {
    std::string out = "{\"ids\": [";
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
    out += "], \"pieces\": [";
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + json_text(piece_of(ids[i]));
    out += "]}\n";
    std::fputs(out.c_str(), stdout);
  } else {
    for (const int32_t id : ids) std::printf("%8d  %s\n", id, json_text(piece_of(id)).c_str());
    std::printf("%zu tokens, %zu bytes\n", ids.size(), text.size());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::tools::ArgParser args("moe_tokenize", "encode a text with a model's tokenizer, or decode token ids");
  Options o;
  args.option("--tokenizer", o.tokenizer, "checkpoint directory holding tokenizer.json (and tokenizer_config.json)");
  args.option("-m,--model", o.model, "a converted model (.moe) whose tokenizer to use");
  args.excludes("--tokenizer", "--model");
  args.option("--text", o.text, "the text to encode");
  args.option("--file", o.file, "a file whose text to encode");
  args.excludes("--text", "--file");
  args.option("--decode", o.decode, "comma-separated token ids to decode (e.g. 1,2,3)");
  args.excludes("--decode", "--text");
  args.excludes("--decode", "--file");
  args.flag("--no-special", o.special, false, "do not add the post-processor's special tokens (BOS, ...)");
  args.flag("--json", o.as_json, true,
            "print one JSON object: {\"ids\": [...], \"pieces\": [...]} or {\"text\": \"...\"}");
  if (const int code = args.parse(argc, argv); code >= 0) return code;
  if (o.tokenizer.empty() == o.model.empty())
    return std::fprintf(stderr, "moe_tokenize: give --tokenizer CHECKPOINT_DIR or --model m.moe (see --help)\n"), 2;
  if (o.decode.empty() && o.file.empty() && !args.given("--text"))
    return std::fprintf(stderr, "moe_tokenize: give --text T, --file F or --decode 1,2,3 (see --help)\n"), 2;
  try {
    const moe::converter::RecordInputs record_inputs;
    return run(o);
  } catch (const moe::InputError& e) {
    std::fprintf(stderr, "moe_tokenize: %s\n", e.what());
    return 1;
  }
}
