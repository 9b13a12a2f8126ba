#include "trainer/data.hpp"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "converter/input_error.hpp"
#include "converter/input_file.hpp"
#include "moe/tokenizer.hpp"

namespace moe::train {

Corpus load_corpus(const std::filesystem::path& path, const std::vector<uint32_t>* fixed_vocab) {
  const std::string text = converter::read_input_file(path, kMaxCorpusBytes, "corpus");
  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  int line = 1, col = 1;
  for (size_t at = 0; at < text.size();) {
    uint32_t cp = 0;
    const int n = utf8_decode(text.data() + at, text.size() - at, cp);
    if (n == 0)
      throw InputError("corpus '" + path.string() + "' is not valid UTF-8 at line " + std::to_string(line) +
                       ", column " + std::to_string(col));
    cps.push_back(cp);
    at += static_cast<size_t>(n);
    if (cp == '\n') ++line, col = 1;
    else ++col;
  }
  if (cps.size() < 1000)
    throw InputError("corpus '" + path.string() + "' has only " + std::to_string(cps.size()) +
                     " characters (need at least 1000)");

  Corpus c;
  if (fixed_vocab) {
    c.vocab = *fixed_vocab;
  } else {
    const std::set<uint32_t> unique(cps.begin(), cps.end());
    c.vocab.assign(unique.begin(), unique.end());
  }
  std::vector<int32_t> ids(cps.size());
  line = 1, col = 1;
  for (size_t i = 0; i < cps.size(); ++i) {
    const auto it = std::lower_bound(c.vocab.begin(), c.vocab.end(), cps[i]);
    if (it == c.vocab.end() || *it != cps[i]) {
      char shown[5] = {};
      utf8_encode(cps[i], shown);
      char code[16];
      std::snprintf(code, sizeof code, "U+%04X", cps[i]);
      throw InputError("corpus character '" + std::string(cps[i] >= 0x20 ? shown : "?") + "' (" + code + ") at line " +
                       std::to_string(line) + ", column " + std::to_string(col) + " is not in the vocabulary of " +
                       std::to_string(c.vocab.size()) + " characters");
    }
    ids[i] = static_cast<int32_t>(it - c.vocab.begin());
    if (cps[i] == '\n') ++line, col = 1;
    else ++col;
  }
  const size_t n_train = static_cast<size_t>(0.9 * static_cast<double>(ids.size()));  // makeMoE: int(0.9*len(data))
  c.train.assign(ids.begin(), ids.begin() + static_cast<long>(n_train));
  c.val.assign(ids.begin() + static_cast<long>(n_train), ids.end());
  return c;
}

void sample_batch(const std::vector<int32_t>& data, const CounterRng& rng, uint64_t first, int B, int T,
                  int32_t* inputs, int32_t* targets) {
  const uint64_t span = data.size() - static_cast<size_t>(T);
  for (int b = 0; b < B; ++b) {
    const size_t start = rng.below(first + static_cast<uint64_t>(b), span);
    for (int t = 0; t < T; ++t) {
      inputs[b * T + t] = data[start + static_cast<size_t>(t)];
      targets[b * T + t] = data[start + static_cast<size_t>(t) + 1];
    }
  }
}

}  // namespace moe::train
