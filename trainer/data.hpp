// The training text: a char-level tokenizer built from the corpus (makeMoE: the sorted
// set of its characters), the first 90% of characters for training and the last 10%
// for validation, and random windows of block_size + 1 tokens as batches.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "trainer/rng.hpp"

namespace moe::train {

struct Corpus {
  std::vector<uint32_t> vocab;  // Unicode code points, ascending
  std::vector<int32_t> train, val;
};

inline constexpr size_t kMaxCorpusBytes = size_t{1} << 30;  // a corpus is read whole into memory

// Reads a UTF-8 text file. With `fixed_vocab` the ids follow it, and a character outside
// it is an error naming the character, its line and column. Throws InputError.
Corpus load_corpus(const std::filesystem::path& path, const std::vector<uint32_t>* fixed_vocab = nullptr);

// B windows of T+1 tokens from `data` (inputs = first T, targets = last T), offsets drawn
// from `rng` at indices [first, first + B). Matches makeMoE's get_batch: offsets
// uniform in [0, len - T).
void sample_batch(const std::vector<int32_t>& data, const CounterRng& rng, uint64_t first, int B, int T,
                  int32_t* inputs, int32_t* targets);

}  // namespace moe::train
