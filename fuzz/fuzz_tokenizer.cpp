// Fuzz target: text and token ids as untrusted input to the two real tokenizers of
// tests/fixtures/tokenizers (Mistral's SentencePiece-style BPE, Qwen3's byte-level BPE).
// The first byte picks the tokenizer and the direction; the rest is the input.
// Invariants, encoding: malformed UTF-8 is an error, nothing else is; ids lie in the
// vocabulary; decode(encode(text)) is the text (Mistral: with U+2581 as a space; Qwen3:
// its NFC by utf8proc) when no added token's text occurs in it; Qwen3's encoding is stable
// under a round trip. Decoding any ids: the whole decode and the streamed one agree and
// are valid UTF-8.
#include <utf8proc.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "converter/tokenizer_json.hpp"
#include "fuzz_support.hpp"
#include "moe/text/bpe_check.hpp"
#include "moe/text/stream_decoder.hpp"

namespace {

using moe::fuzz::invariant_broken;

struct Loaded {
  std::vector<uint8_t> buffer;
  moe::text::BpeTokenizer tok;
  explicit Loaded(const char* name) {
    buffer = moe::converter::bpe_tokenizer_buffer(
        moe::converter::read_hf_tokenizer(std::string(MOE_SOURCE_DIR "/tests/fixtures/tokenizers/") + name, 1 << 20));
    if (moe::text::check_bpe_tokenizer(flatbuffers::GetRoot<moe::fb::Tokenizer>(buffer.data()), 1 << 20, tok))
      invariant_broken("the fixture's tokenizer does not load");
  }
};

std::vector<int32_t> encode(const moe::text::BpeTokenizer& tok, const std::string& s, bool& ok) {
  std::vector<uint8_t> scratch(tok.encode_scratch_bytes(s.size()));
  std::vector<int32_t> ids(s.size() + 8);
  int n = 0;
  const moe::Error e = tok.encode(s.data(), s.size(), false, ids.data(), static_cast<int>(ids.size()), n,
                                  scratch.data(), scratch.size());
  ok = !e;
  if (e && e.code != moe::ErrorCode::unknown_character) invariant_broken("encode failed on valid UTF-8");
  ids.resize(static_cast<size_t>(n));
  for (const int32_t id : ids)
    if (id < 0 || id >= tok.size()) invariant_broken("token id outside the vocabulary");
  return ids;
}

std::string decode(const moe::text::BpeTokenizer& tok, const std::vector<int32_t>& ids) {
  size_t cap = moe::text::StreamDecoder::kSlack;
  for (const int32_t id : ids) {
    size_t n;
    tok.decoded(id, n);
    cap += 3 * n + moe::text::StreamDecoder::kSlack;
  }
  std::string whole(cap, '\0');
  size_t len = 0;
  if (moe::text::decode_text(tok, ids.data(), static_cast<int>(ids.size()), false, whole.data(), whole.size(), len))
    invariant_broken("decode failed");
  whole.resize(len);
  moe::text::StreamDecoder d(tok, true, false);
  std::string streamed;
  std::vector<char> out;
  for (const int32_t id : ids) {
    size_t n;
    tok.decoded(id, n);
    out.resize(3 * n + moe::text::StreamDecoder::kSlack);  // what put() asks for
    const long k = d.put(id, out.data(), out.size());
    if (k < 0) invariant_broken("streaming decode ran out of room");
    streamed.append(out.data(), static_cast<size_t>(k));
  }
  out.resize(moe::text::StreamDecoder::kSlack);
  const long k = d.finish(out.data(), out.size());
  if (k < 0) invariant_broken("streaming decode ran out of room at the end");
  streamed.append(out.data(), static_cast<size_t>(k));
  if (streamed != whole) invariant_broken("streamed decode != whole decode");
  if (moe::text::utf8_invalid_at(whole.data(), whole.size()) != whole.size()) invariant_broken("decode is not UTF-8");
  return whole;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Loaded mistral("mistral"), qwen3("qwen3");
  if (size == 0 || size > 4097) return 0;
  const int mode = data[0] % 4;
  const Loaded& l = mode % 2 == 0 ? mistral : qwen3;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (mode >= 2) {  // ids: two bytes each
    std::vector<int32_t> ids;
    for (size_t i = 0; i + 1 < text.size(); i += 2)
      ids.push_back(static_cast<int32_t>((static_cast<uint8_t>(text[i]) << 8 | static_cast<uint8_t>(text[i + 1])) * 3 %
                                         l.tok.size()));
    decode(l.tok, ids);
    return 0;
  }
  bool ok = false;
  const std::vector<int32_t> ids = encode(l.tok, text, ok);
  const bool valid = moe::text::utf8_invalid_at(text.data(), text.size()) == text.size();
  if (ok != valid) invariant_broken("encode accepted malformed UTF-8");
  if (!ok) return 0;
  const std::string back = decode(l.tok, ids);
  if (text.find('<') != std::string::npos) return 0;  // an added token's text may be in it
  if (mode == 0) {
    if (back != replace_all(text, "\xe2\x96\x81", " ")) invariant_broken("Mistral: decode(encode(text)) != text");
  } else {
    utf8proc_uint8_t* nfc = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(text.c_str()));
    const bool same = text.find('\0') != std::string::npos || back == reinterpret_cast<const char*>(nfc);
    std::free(nfc);
    if (!same) invariant_broken("Qwen3: decode(encode(text)) != NFC(text)");
    bool again_ok = false;
    if (encode(l.tok, back, again_ok) != ids) invariant_broken("Qwen3: encode(decode(encode(text))) != encode(text)");
  }
  return 0;
}
