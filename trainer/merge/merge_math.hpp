// The arithmetic of model merging, one tensor at a time, as mergekit defines it:
// weighted averages, spherical interpolation, and task-vector merging with magnitude
// trimming (TIES), random drop-and-rescale (DARE) and sign election. Each function takes
// flat f32 tensors of n elements; what a recipe means by them lives in merge.cpp.
#pragma once

#include <cstdint>
#include <vector>

namespace moe::merge {

// out = sum_i w_i x_i, divided by sum_i w_i when `normalize`. Accumulates in double.
void linear(const std::vector<const float*>& models, const std::vector<double>& weights, bool normalize, long n,
            float* out);

// Spherical interpolation from a (t = 0) to b (t = 1), treating each tensor as one
// vector: the angle comes from the normalised tensors, the coefficients are applied to
// the originals (so norms interpolate too). Nearly parallel tensors (|cos| above
// `parallel_threshold`) are interpolated linearly. Returns true when it fell back.
bool slerp(const float* a, const float* b, long n, double t, float* out, double parallel_threshold = 0.9995);

// Keeps the round(density * n) entries of largest magnitude (ties: lower index), zeroes
// the rest: TIES' trim step.
void trim_by_magnitude(float* delta, long n, double density);

// Drops each entry with probability 1 - density and scales survivors by 1 / density, so
// the expected value is unchanged: DARE. Deterministic in (seed, stream).
void drop_and_rescale(float* delta, long n, double density, uint64_t seed, uint64_t stream);

enum class Sparsify : uint8_t { none, magnitude, random };
enum class Consensus : uint8_t { none, sign };  // sign: TIES' elected sign (sign of the weighted sum)

struct TaskVectorOptions {
  Sparsify sparsify = Sparsify::none;
  Consensus consensus = Consensus::none;
  bool normalize = false;  // divide by the sum of the weights that contribute (per entry, with consensus)
  double lambda = 1.0;     // scale of the merged task vector
  uint64_t seed = 0;       // DARE's draws
  uint64_t stream = 0;     // which tensor: a different stream per tensor and model
};

// out = base + lambda * merge_i(w_i * sparsify(x_i - base)). With sign consensus an entry
// keeps only the deltas whose sign agrees with the sign of the weighted sum (sum 0: +),
// and normalisation divides by those deltas' weights (a disjoint mean).
void merge_task_vectors(const float* base, const std::vector<const float*>& models, const std::vector<double>& weights,
                        const std::vector<double>& densities, long n, const TaskVectorOptions& options, float* out);

// Deterministic, platform-independent draws for merging (splitmix64).
uint64_t mix64(uint64_t x);
double uniform01(uint64_t seed, uint64_t stream, uint64_t index);  // [0, 1)

}  // namespace moe::merge
