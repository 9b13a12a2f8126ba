// Tokenizer throughput and cost, for bench/tokenizer_speed.sh: encode and decode MB/s
// of a text with a Hugging Face tokenizer as the engine runs it (single thread, median
// of reps), the bytes its tables add to a .moe file, and the time to check them at load.
//   bench_tokenize TOKENIZER_DIR TEXT_FILE [REPS]   -> one JSON object on stdout
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "converter/tokenizer_json.hpp"
#include "converter/unicode/unicode_data.hpp"
#include "moe/text/bpe_check.hpp"
#include "moe/text/stream_decoder.hpp"
#include <utf8proc.h>

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return std::fprintf(stderr, "usage: bench_tokenize TOKENIZER_DIR TEXT_FILE [REPS]\n"), 2;
  const int reps = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;
  std::ifstream in(argv[2], std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();

  const auto tables = moe::converter::read_hf_tokenizer(argv[1], 1 << 30);
  const std::vector<uint8_t> buffer = moe::converter::bpe_tokenizer_buffer(tables);
  flatbuffers::FlatBufferBuilder unicode;
  unicode.Finish(moe::converter::write_unicode_data(unicode));
  const auto* fb_tok = flatbuffers::GetRoot<moe::fb::Tokenizer>(buffer.data());
  moe::text::BpeTokenizer tok;
  std::vector<double> check_s, check_no_crc_s;
  for (int r = 0; r < reps; ++r) {
    auto t = Clock::now();
    if (moe::Error e = moe::text::check_bpe_tokenizer(fb_tok, 1 << 30, tok, true))
      return std::fprintf(stderr, "%s\n", e.what()), 1;
    check_s.push_back(since(t));
    t = Clock::now();
    if (moe::Error e = moe::text::check_bpe_tokenizer(fb_tok, 1 << 30, tok, false))
      return std::fprintf(stderr, "%s\n", e.what()), 1;
    check_no_crc_s.push_back(since(t));
  }

  std::vector<uint8_t> scratch(tok.encode_scratch_bytes(text.size()));
  std::vector<int32_t> ids(text.size() + 16);
  int n = 0;
  std::vector<double> encode_s, decode_s;
  for (int r = 0; r < reps; ++r) {
    const auto t = Clock::now();
    if (moe::Error e = tok.encode(text.data(), text.size(), false, ids.data(), static_cast<int>(ids.size()), n,
                                  scratch.data(), scratch.size()))
      return std::fprintf(stderr, "%s\n", e.what()), 1;
    encode_s.push_back(since(t));
  }
  std::string out(3 * text.size() + 64 * static_cast<size_t>(n) + 64, '\0');
  size_t len = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t = Clock::now();
    if (moe::Error e = moe::text::decode_text(tok, ids.data(), n, false, out.data(), out.size(), len))
      return std::fprintf(stderr, "%s\n", e.what()), 1;
    decode_s.push_back(since(t));
  }
  // NFC of the whole text: the engine's (over the file's tables) against utf8proc's.
  std::vector<double> nfc_s, utf8proc_s;
  if (tok.unicode().present()) {
    std::string nfc(3 * text.size() + 8, '\0');
    std::vector<uint32_t> cps(2 * nfc.size());
    for (int r = 0; r < reps; ++r) {
      auto t = Clock::now();
      if (tok.unicode().nfc(text.data(), text.size(), nfc.data(), nfc.size(), cps.data(), cps.size()) < 0)
        return std::fprintf(stderr, "nfc failed\n"), 1;
      nfc_s.push_back(since(t));
      t = Clock::now();
      std::free(utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(text.c_str())));
      utf8proc_s.push_back(since(t));
    }
  }
  uint64_t fnv = 0xcbf29ce484222325ull;  // of the ids, compared with the reference's
  for (int i = 0; i < n; ++i)
    for (int b = 0; b < 4; ++b)
      fnv = (fnv ^ (static_cast<uint32_t>(ids[static_cast<size_t>(i)]) >> (8 * b) & 255)) * 0x100000001b3ull;
  std::printf(
      "{\"tokenizer\": \"%s\", \"text_bytes\": %zu, \"tokens\": %d, \"ids_fnv\": \"%llx\", \"encode_mb_s\": %.2f, "
      "\"decode_mb_s\": %.1f, "
      "\"table_bytes\": %zu, \"unicode_bytes\": %u, \"scratch_bytes\": %zu, \"check_ms\": %.2f, "
      "\"check_ms_no_crc\": %.2f, \"nfc_mb_s\": %.1f, \"utf8proc_nfc_mb_s\": %.1f}\n",
      argv[1], text.size(), n, static_cast<unsigned long long>(fnv), text.size() / median(encode_s) / 1e6,
      len / median(decode_s) / 1e6, buffer.size(), tables.needs_unicode ? unicode.GetSize() : 0u, scratch.size(),
      median(check_s) * 1e3, median(check_no_crc_s) * 1e3, nfc_s.empty() ? 0. : text.size() / median(nfc_s) / 1e6,
      utf8proc_s.empty() ? 0. : text.size() / median(utf8proc_s) / 1e6);
  return 0;
}
