// Measuring a model: held-out loss on text, and agreement of two models' logits.
// Shared by the accuracy tests and bench/quant_accuracy (tools code: may allocate).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "moe/engine.hpp"
#include "moe/sampler.hpp"

namespace moe::tools {

// Text -> ids with the model's char tokenizer; characters outside it are skipped.
inline std::vector<int32_t> encode_lenient(const CharTokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (size_t at = 0; at < text.size();) {
    uint32_t cp = 0;
    const int n = utf8_decode(text.data() + at, text.size() - at, cp);
    at += n > 0 ? static_cast<size_t>(n) : 1;
    const int id = n > 0 ? tok.find(cp) : -1;
    if (id >= 0) ids.push_back(id);
  }
  return ids;
}

// Mean next-token cross-entropy (nats) over `windows` windows of max_context tokens,
// evenly spaced over `ids` (deterministic, unlike makeMoE's random batches). Each window
// is one forward pass from position 0, as in training.
template <class EngineT>
double held_out_loss(EngineT& engine, const std::vector<int32_t>& ids, int windows) {
  constexpr int T = EngineT::config.max_context, V = EngineT::config.vocab_size;
  std::vector<float> logits(static_cast<size_t>(T) * V);
  const size_t span = ids.size() - T - 1;
  double total = 0;
  long count = 0;
  for (int w = 0; w < windows; ++w) {
    const size_t start = span * static_cast<size_t>(w) / static_cast<size_t>(windows);
    engine.reset();
    if (engine.prefill(ids.data() + start, T, logits.data())) return NAN;
    for (int t = 0; t < T; ++t) {
      const float* row = logits.data() + static_cast<long>(t) * V;
      const float m = *std::max_element(row, row + V);
      double z = 0;
      for (int i = 0; i < V; ++i) z += std::exp(static_cast<double>(row[i] - m));
      total += std::log(z) + m - row[ids[start + static_cast<size_t>(t) + 1]];
      ++count;
    }
  }
  return total / static_cast<double>(count);
}

struct Agreement {
  double max_abs_error = 0;   // largest |a - b| over all logits
  double mean_abs_error = 0;  // mean |a - b| over all logits
  double max_abs_logit = 0;   // largest |b| (the scale of the reference)
  double top1 = 0;            // fraction of positions whose argmax agrees
  long positions = 0;
};

// The logits at every position of each sequence (one prefill per sequence); empty if a
// prefill fails.
template <class EngineT>
std::vector<std::vector<float>> all_logits(EngineT& engine, const std::vector<std::vector<int32_t>>& sequences) {
  constexpr int V = EngineT::config.vocab_size;
  std::vector<std::vector<float>> logits;
  for (const auto& seq : sequences) {
    const int n = static_cast<int>(seq.size());
    std::vector<float>& x = logits.emplace_back(static_cast<size_t>(n) * V);
    engine.reset();
    if (engine.prefill(seq.data(), n, x.data())) return {};
  }
  return logits;
}

// Agreement of a candidate's logits with a reference's, as all_logits gives them for the
// same sequences. A reference computed once serves every candidate compared with it.
inline Agreement compare_logits(const std::vector<std::vector<float>>& candidate,
                                const std::vector<std::vector<float>>& reference, int vocab) {
  if (candidate.empty() || candidate.size() != reference.size()) return Agreement{NAN, NAN, 0, 0};
  Agreement a;
  long agree = 0;
  double sum_error = 0;
  for (size_t s = 0; s < candidate.size(); ++s) {
    const long n = static_cast<long>(reference[s].size()) / vocab;
    for (long t = 0; t < n; ++t) {
      const float* rx = candidate[s].data() + t * vocab;
      const float* ry = reference[s].data() + t * vocab;
      for (int i = 0; i < vocab; ++i) {
        a.max_abs_error = std::max(a.max_abs_error, std::fabs(static_cast<double>(rx[i]) - ry[i]));
        sum_error += std::fabs(static_cast<double>(rx[i]) - ry[i]);
        a.max_abs_logit = std::max(a.max_abs_logit, std::fabs(static_cast<double>(ry[i])));
      }
      agree += argmax(rx, vocab) == argmax(ry, vocab);
      ++a.positions;
    }
  }
  a.top1 = static_cast<double>(agree) / static_cast<double>(a.positions);
  a.mean_abs_error = sum_error / static_cast<double>(a.positions * vocab);
  return a;
}

// Runs both engines over the same token sequences (all positions) and compares logits.
template <class EngineA, class EngineB>
Agreement compare_logits(EngineA& candidate, EngineB& reference, const std::vector<std::vector<int32_t>>& sequences) {
  return compare_logits(all_logits(candidate, sequences), all_logits(reference, sequences), EngineA::config.vocab_size);
}

}  // namespace moe::tools
