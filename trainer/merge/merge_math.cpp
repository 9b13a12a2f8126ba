#include "trainer/merge/merge_math.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moe::merge {

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

double uniform01(uint64_t seed, uint64_t stream, uint64_t index) {
  const uint64_t r = mix64(mix64(mix64(seed) ^ stream) ^ index);
  return static_cast<double>(r >> 11) * 0x1.0p-53;
}

void linear(const std::vector<const float*>& models, const std::vector<double>& weights, bool normalize, long n,
            float* out) {
  double total = 0;
  for (double w : weights) total += w;
  const double scale = normalize && total != 0 ? 1.0 / total : 1.0;
  for (long i = 0; i < n; ++i) {
    double acc = 0;
    for (size_t m = 0; m < models.size(); ++m) acc += weights[m] * models[m][i];
    out[i] = static_cast<float>(acc * scale);
  }
}

bool slerp(const float* a, const float* b, long n, double t, float* out, double parallel_threshold) {
  double aa = 0, bb = 0, ab = 0;
  for (long i = 0; i < n; ++i) {
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
    ab += static_cast<double>(a[i]) * b[i];
  }
  constexpr double eps = 1e-8;  // mergekit's: a zero tensor counts as parallel to anything
  const double cos_theta = ab / (std::max(std::sqrt(aa), eps) * std::max(std::sqrt(bb), eps));
  double s0 = 1 - t, s1 = t;
  const bool parallel = std::fabs(cos_theta) > parallel_threshold || aa == 0 || bb == 0;
  if (!parallel) {
    const double theta = std::acos(std::clamp(cos_theta, -1.0, 1.0));
    s0 = std::sin((1 - t) * theta) / std::sin(theta);
    s1 = std::sin(t * theta) / std::sin(theta);
  }
  for (long i = 0; i < n; ++i) out[i] = static_cast<float>(s0 * a[i] + s1 * b[i]);
  return parallel;
}

void trim_by_magnitude(float* delta, long n, double density) {
  const long keep = std::clamp(std::lround(density * static_cast<double>(n)), 0L, n);
  if (keep == n) return;
  std::vector<long> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0L);
  // Largest magnitude first; equal magnitudes keep the lower index (deterministic).
  std::nth_element(order.begin(), order.begin() + keep, order.end(), [&](long x, long y) {
    const float fx = std::fabs(delta[x]), fy = std::fabs(delta[y]);
    return fx > fy || (fx == fy && x < y);
  });
  for (long j = keep; j < n; ++j) delta[order[static_cast<size_t>(j)]] = 0.f;
}

void drop_and_rescale(float* delta, long n, double density, uint64_t seed, uint64_t stream) {
  if (density >= 1) return;
  const double scale = density > 0 ? 1.0 / density : 0.0;
  for (long i = 0; i < n; ++i)
    delta[i] = uniform01(seed, stream, static_cast<uint64_t>(i)) < density ? static_cast<float>(delta[i] * scale) : 0.f;
}

void merge_task_vectors(const float* base, const std::vector<const float*>& models, const std::vector<double>& weights,
                        const std::vector<double>& densities, long n, const TaskVectorOptions& o, float* out) {
  const size_t M = models.size();
  std::vector<std::vector<float>> deltas(M, std::vector<float>(static_cast<size_t>(n)));
  for (size_t m = 0; m < M; ++m) {
    float* d = deltas[m].data();
    for (long i = 0; i < n; ++i) d[i] = models[m][i] - base[i];
    if (o.sparsify == Sparsify::magnitude) trim_by_magnitude(d, n, densities[m]);
    if (o.sparsify == Sparsify::random) drop_and_rescale(d, n, densities[m], o.seed, o.stream * 1000003u + m);
  }
  for (long i = 0; i < n; ++i) {
    double elected = 1;
    if (o.consensus == Consensus::sign) {
      double sum = 0;
      for (size_t m = 0; m < M; ++m) sum += weights[m] * deltas[m][static_cast<size_t>(i)];
      elected = sum >= 0 ? 1 : -1;
    }
    double mixed = 0, divisor = 0;
    for (size_t m = 0; m < M; ++m) {
      const double d = deltas[m][static_cast<size_t>(i)];
      // With consensus an entry counts only when its sign is the elected one (a trimmed
      // zero has no sign, so it does not count: the "disjoint" mean).
      if (o.consensus == Consensus::sign && !(d * elected > 0)) continue;
      mixed += weights[m] * d;
      divisor += weights[m];
    }
    if (o.normalize) mixed /= std::fabs(divisor) < 1e-8 ? 1.0 : divisor;
    out[i] = static_cast<float>(base[i] + o.lambda * mixed);
  }
}

}  // namespace moe::merge
