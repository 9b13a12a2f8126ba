// How the engine splits its work across a platform's workers (workers.hpp): every
// weight product goes through run_products, which quantizes its input where the target
// multiplies int8 by int8 and gives each worker a share of every matrix's rows (ranges
// of whole SIMD blocks). Results do not depend on the split: every output row is
// computed the same way by whichever thread owns it.
#pragma once

#include <cstdint>
#include <type_traits>

#include "moe/kernels/activation.hpp"
#include "moe/kernels/backend.hpp"
#include "moe/kernels/linear.hpp"
#include "moe/kernels/linear_q4.hpp"
#include "moe/kernels/linear_q8.hpp"
#include "moe/tensor.hpp"
#include "moe/workers.hpp"

namespace moe {

// The workers and the smallest share worth a hand-over (about a microsecond).
struct WorkSplit {
  Workers workers{};
  long min_macs_per_worker = 0;

  // Whether work of `macs` multiply-adds repays a hand-over per worker (64-bit: a
  // chunk's work passes 2^31 on large models, and long is 32-bit on armv7).
  bool repays(int64_t macs) const {
    return workers.threads > 1 && macs >= static_cast<int64_t>(min_macs_per_worker) * workers.threads;
  }

  // Runs task over the workers when the work repays it, else on this core as its only part.
  void share(Workers::Task task, void* ctx, int64_t macs) const {
    if (repays(macs)) workers.run(workers.pool, task, ctx, Workers::kPoolParts);
    else task(ctx, 0, 1);
  }
};

// How a product input is held in act_q: not at all, for int8 weights (blocks of 32
// adjacent columns: quantize_activations) or for q4 weights (q4's blocks, with their
// sums: quantize_activations_q4).
enum class ActQuant { none, q8, q4 };

// The input of one or more weight products: x [n, cols]. Where the target multiplies
// int8 by int8, it is quantized once (into the products' act_q) for the int8 or q4
// matrices that read it.
struct ProductInput {
  const float* x;
  int n, cols;
  ActQuant quantized = ActQuant::none;
};

// Up to three products that read one input (q, k and v; an expert's gate and up), run
// as one task: with workers, each takes its share of every matrix's rows, so one
// hand-over serves all of them. `swiglu`: outputs 0 and 1 are an expert's gate and up,
// and each worker finishes its own rows with silu(gate) * up while they are in cache.
struct Products {
  ProductInput* in;
  int count;
  const Matrix* m[3];
  float* y[3];
  bool q8[3];  // multiplied by int8 activations (int8 or q4 weights)
  bool swiglu;
  int8_t* act_q;     // where the input is quantized (kInt8Dot): the engine's scratch,
  float* act_scale;  // or an expert slot's when experts run side by side
  int32_t* act_sum;  // q4 inputs: -8 * each block's sum of act_q
};

// One worker's part of a Products (a Workers::Task).
template <class K>
[[gnu::noinline]] void products_part(void* ctx, int part, int parts) {
  const Products& p = *static_cast<const Products*>(ctx);
  constexpr int kRowBlock = 16;  // a multiple of every target's float lanes
  int r0 = 0, r1 = 0;
  for (int i = 0; i < p.count; ++i) {
    const Matrix& m = *p.m[i];
    const int blocks = (m.rows + kRowBlock - 1) / kRowBlock;
    r0 = blocks * part / parts * kRowBlock;
    r1 = part + 1 == parts ? m.rows : blocks * (part + 1) / parts * kRowBlock;
    if (r0 >= r1) continue;
    if (p.q8[i] && m.dtype == DType::q4)
      kernels::linear_q4(K{}, m, kernels::ActQ4{p.act_q, p.act_scale, p.act_sum}, p.in->n, p.y[i], r0, r1);
    else if (p.q8[i]) kernels::linear_q8(K{}, m, p.act_q, p.act_scale, p.in->n, p.y[i], r0, r1);
    else kernels::linear(K{}, m, p.in->x, p.in->n, p.y[i], r0, r1);
  }
  if (p.swiglu && r0 < r1) {  // gate and up have the same rows, so the same share
    const long F = p.m[0]->rows;
    for (int t = 0; t < p.in->n; ++t) kernels::silu_mul(K{}, p.y[0] + t * F + r0, p.y[1] + t * F + r0, r1 - r0);
  }
}

// The split rule's units are the calibrated in-cache multiply-adds (split_calibration).
// Decode (one token) reads each weight once, from memory once a model outgrows the
// caches, so its products weigh their bytes, each worth this many in-cache multiply-adds
// (bench/README.md, "Design decisions").
inline constexpr int64_t kStreamedByteMacs = 3;

// Every weight product of the engine goes through here. On targets with integer dot
// products (kInt8Dot) eligible int8 matrices multiply quantized activations when
// `int8_activations`; otherwise int8/f16 weights are widened to f32. may_split: the
// product may go to the workers (false inside a task that already runs on one).
template <class K>
void run_products(const WorkSplit& split, Products& p, bool int8_activations, bool may_split = true) {
  ProductInput& in = *p.in;
  int64_t macs = 0;
  // One quantization of the input serves one block layout: where int8 and q4 matrices
  // share an input (not in the engine's recipes), the q4 ones take f32 activations.
  ActQuant want = ActQuant::none;
  for (int i = 0; i < p.count; ++i) {
    p.q8[i] = false;
    if constexpr (kernels::kInt8Dot && !std::is_same_v<K, kernels::Scalar>) {
      if (int8_activations && kernels::q8_eligible(*p.m[i])) want = ActQuant::q8;
      else if (int8_activations && p.m[i]->dtype == DType::q4 && want == ActQuant::none && p.act_sum != nullptr)
        want = ActQuant::q4;
    }
  }
  for (int i = 0; i < p.count; ++i) {
    p.q8[i] = want == ActQuant::q8 ? kernels::q8_eligible(*p.m[i]) : want == ActQuant::q4 && p.m[i]->dtype == DType::q4;
    const Matrix& m = *p.m[i];
    macs += in.n == 1 ? kStreamedByteMacs * static_cast<int64_t>(data_bytes(m.dtype, uint64_t(m.rows) * m.cols))
                      : static_cast<int64_t>(m.rows) * m.cols * in.n;
  }
  if constexpr (kernels::kInt8Dot && !std::is_same_v<K, kernels::Scalar>) {
    if (want != ActQuant::none && in.quantized != want) {
      if (want == ActQuant::q8) kernels::quantize_activations(K{}, in.x, in.n, in.cols, p.act_q, p.act_scale);
      else kernels::quantize_activations_q4(K{}, in.x, in.n, in.cols, p.act_q, p.act_scale, p.act_sum);
      in.quantized = want;
    }
  }
  if (may_split) split.share(&products_part<K>, &p, macs);
  else products_part<K>(&p, 0, 1);
}

}  // namespace moe
