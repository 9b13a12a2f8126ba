// AdamW exactly as torch.optim.AdamW computes it (decoupled weight decay applied first,
// bias-corrected moments), over the flat parameter buffer, with an optional warmup +
// cosine learning-rate schedule and global-norm gradient clipping. The moments are two
// more flat buffers of the parameters' layout.
#pragma once

#include <vector>

#include "trainer/train_config.hpp"

namespace moe::train {

class AdamW {
 public:
  AdamW(const TrainConfig& config, long n_params, long n_decayed);

  float learning_rate(int step) const;  // step counts from 0
  // One update with the gradients of step `step` (0-based). Returns the gradient's
  // global L2 norm before clipping.
  double update(std::vector<float>& params, std::vector<float>& grads, int step);

  std::vector<float> m, v;  // first and second moments

 private:
  TrainConfig cfg_;
  long n_decayed_;
};

}  // namespace moe::train
