#include "converter/quantize.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "converter/input_error.hpp"
#include "moe/fp16.hpp"

namespace moe::converter {

namespace {

// The block's nibbles for scale d (d != 0), and their squared error at d. The errors are
// found first (a loop the compiler vectorizes) and then summed in index order, so the
// sum, and the scale it picks, do not depend on the vector width.
double nibbles_at(const float* v, float d, uint8_t* q) {
  const float inv = 1.f / d;
  float n[kQ4Block];
  double e[kQ4Block];
  for (int i = 0; i < kQ4Block; ++i) {
    const float r = std::nearbyint(v[i] * inv);
    n[i] = r < -8.f ? -8.f : r > 7.f ? 7.f : r;
  }
  for (int i = 0; i < kQ4Block; ++i) q[i] = static_cast<uint8_t>(static_cast<int>(n[i]) + 8);
  for (int i = 0; i < kQ4Block; ++i) e[i] = static_cast<double>(v[i]) - static_cast<double>(n[i]) * d;
  double err = 0;
  for (int i = 0; i < kQ4Block; ++i) err += e[i] * e[i];
  return err;
}

double block_error(const float* v, const Q4Block& b) {
  const float d = half_to_float(b.scale);
  double err = 0;
  for (int i = 0; i < kQ4Block; ++i) {
    const double e = static_cast<double>(v[i]) - static_cast<double>(static_cast<float>(b.nibbles[i] - 8) * d);
    err += e * e;
  }
  return err;
}

// The block's value of largest magnitude (the first, on ties), as llama.cpp finds it.
float largest(const float* v) {
  float amax = 0.f, max = 0.f;
  for (int i = 0; i < kQ4Block; ++i)
    if (amax < std::fabs(v[i])) amax = std::fabs(v[i]), max = v[i];
  return max;
}

Q4Block llama_q4_0_block(const float* v) {
  const float max = largest(v);
  const float d = max / -8.f, id = d != 0.f ? 1.f / d : 0.f;
  Q4Block b;
  b.scale = float_to_half(d);
  for (int i = 0; i < kQ4Block; ++i)
    b.nibbles[i] = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(v[i] * id + 8.5f))));
  return b;
}

}  // namespace

Q4Block quantize_block_q4(const float* v, Q4Rule rule) {
  const Q4Block q4_0 = llama_q4_0_block(v);
  if (rule == Q4Rule::llama_q4_0) return q4_0;
  const float max = largest(v);
  Q4Block best = q4_0;
  double best_err = block_error(v, q4_0);
  if (max == 0.f) return best;
  uint8_t q[kQ4Block];
  // The scale d32 rounded to f16; false where that is 0 or not finite. Otherwise q holds
  // its nibbles, and best takes them where they err less.
  auto consider = [&](float d32) {
    const uint16_t h = float_to_half(d32);
    const float d = half_to_float(h);
    if (!(std::fabs(d) > 0.f) || !std::isfinite(d)) return false;
    const double err = nibbles_at(v, d, q);
    if (err < best_err) {
      best_err = err;
      best.scale = h;
      std::copy(q, q + kQ4Block, best.nibbles);
    }
    return true;
  };
  for (float c : {-8.f, -7.5f, -7.f, -6.5f, -6.f, 7.5f, 7.f, 6.5f, 6.f}) {
    if (!consider(max / c)) continue;
    // Least squares for the nibbles that scale gave (still in q): d = sum(v q) / sum(q q).
    double vq = 0, qq = 0;
    for (int i = 0; i < kQ4Block; ++i) {
      const double n = static_cast<double>(q[i]) - 8;
      vq += static_cast<double>(v[i]) * n;
      qq += n * n;
    }
    if (qq > 0) consider(static_cast<float>(vq / qq));
  }
  return best;
}

namespace {

// f(r0, r1) over the rows [0, rows), in parts shared among the workers' threads where it
// has them. Each part writes only its own rows, so the result does not depend on the split.
template <class F>
void for_row_parts(const Workers& workers, int rows, const F& f) {
  if (workers.threads <= 1 || rows < 2) return f(0, rows);
  struct Job {
    const F* f;
    int rows;
  } job{&f, rows};
  workers.run(
      workers.pool,
      [](void* ctx, int part, int parts) {
        const Job& j = *static_cast<const Job*>(ctx);
        (*j.f)(static_cast<int>(static_cast<long>(j.rows) * part / parts),
               static_cast<int>(static_cast<long>(j.rows) * (part + 1) / parts));
      },
      &job, Workers::kPoolParts);
}

}  // namespace

Quantized quantize(const std::vector<float>& w, int rows, int cols, DType dtype, int group_size,
                   const std::string& name, Q4Rule q4_rule, const Workers& workers) {
  Quantized q;
  q.dtype = dtype;
  const size_t n = w.size();
  switch (dtype) {
    case DType::f32:
      q.data.resize(n * 4);
      std::memcpy(q.data.data(), w.data(), n * 4);
      break;
    case DType::f16: {
      q.data.resize(n * 2);
      for (size_t i = 0; i < n; ++i) {
        if (std::fabs(w[i]) > 65504.f)
          throw InputError("tensor '" + name + "' has value " + std::to_string(w[i]) +
                           " outside the fp16 range (|x| <= 65504): store it as f32 or int8");
        const uint16_t h = float_to_half(w[i]);
        q.data[2 * i] = static_cast<uint8_t>(h & 0xff);
        q.data[2 * i + 1] = static_cast<uint8_t>(h >> 8);
      }
      break;
    }
    case DType::i8: {
      const int g = int8_group_size(cols, group_size);
      q.group_size = g;
      q.data.resize(n);
      q.scales.resize(static_cast<size_t>(rows) * static_cast<size_t>(cols / g));
      for_row_parts(workers, rows, [&](int r0, int r1) {
        for (int r = r0; r < r1; ++r)
          for (int g0 = 0; g0 < cols; g0 += g) {
            const float* src = w.data() + static_cast<long>(r) * cols + g0;
            float amax = 0.f;
            for (int i = 0; i < g; ++i) amax = std::fmax(amax, std::fabs(src[i]));
            // An all-zero group gets scale 1 (its values are 0 anyway): scales stay > 0,
            // which the loader checks. So does a group of denormals so small that
            // amax / 127 underflows to 0 (found by fuzz_checkpoint: 0 / 0 gave NaN);
            // all its values round to 0 at scale 1 too.
            const float tight = amax / 127.f;
            const float scale = tight > 0.f ? tight : 1.f;
            q.scales[static_cast<size_t>(r) * static_cast<size_t>(cols / g) + static_cast<size_t>(g0 / g)] = scale;
            for (int i = 0; i < g; ++i) {
              const float v = std::nearbyint(src[i] / scale);
              const float clamped = v > 127.f ? 127.f : v < -127.f ? -127.f : v;
              q.data[static_cast<size_t>(r) * static_cast<size_t>(cols) + static_cast<size_t>(g0 + i)] =
                  static_cast<uint8_t>(static_cast<int8_t>(clamped));
            }
          }
      });
      break;
    }
    case DType::q4: {
      if (cols % kQ4Block != 0)
        throw InputError("tensor '" + name + "' has " + std::to_string(cols) +
                         " columns: int4 needs a multiple of 32 (blocks of 32); store it as int8");
      for (float v : w)
        if (std::fabs(v) > 65504.f * 7.f)
          throw InputError("tensor '" + name + "' has value " + std::to_string(v) +
                           " beyond what an fp16 block scale can reach: store it as f32 or int8");
      q.group_size = kQ4Block;
      q.data.resize(data_bytes(DType::q4, n));
      // Each row's groups: the blocks in q4_column's order, then their scales and nibbles
      // (or-ed into the zeroed bytes).
      const int blocks = cols / kQ4Block;
      const size_t row_bytes = data_bytes(DType::q4, static_cast<uint64_t>(cols));
      for_row_parts(workers, rows, [&](int r0, int r1) {
        float v[kQ4GroupBlocks][kQ4Block];
        Q4Block qb[kQ4GroupBlocks];
        for (int r = r0; r < r1; ++r) {
          uint8_t* out = q.data.data() + static_cast<size_t>(r) * row_bytes;
          for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
            const int g = q4_group_blocks(blocks, gi);
            const float* src = w.data() + static_cast<size_t>(r) * static_cast<size_t>(cols) +
                               static_cast<size_t>(gi * kQ4GroupBlocks * kQ4Block);
            for (int c = 0; c < kQ4Block * g; ++c) {
              const Q4Column at = q4_column(c, g);
              v[at.block][at.index] = src[c];
            }
            for (int j = 0; j < g; ++j) {
              qb[j] = quantize_block_q4(v[j], q4_rule);
              out[2 * j] = static_cast<uint8_t>(qb[j].scale & 0xff);
              out[2 * j + 1] = static_cast<uint8_t>(qb[j].scale >> 8);
            }
            uint8_t* nibbles = out + 2 * g;
            for (int c = 0; c < kQ4Block * g; ++c) {
              const Q4Column at = q4_column(c, g);
              nibbles[at.byte] |= static_cast<uint8_t>(qb[at.block].nibbles[at.index] << (at.high ? 4 : 0));
            }
            out += g * kQ4BlockBytes;
          }
        }
      });
      break;
    }
  }
  return q;
}

float dequantized(const Quantized& q, int cols, long i) {
  switch (q.dtype) {
    case DType::f32: {
      float v;
      std::memcpy(&v, q.data.data() + 4 * i, 4);
      return v;
    }
    case DType::f16:
      return half_to_float(
          static_cast<uint16_t>(q.data[2 * static_cast<size_t>(i)] | q.data[2 * static_cast<size_t>(i) + 1] << 8));
    case DType::i8: {
      const long row = i / cols, col = i % cols;
      return static_cast<float>(static_cast<int8_t>(q.data[static_cast<size_t>(i)])) *
             q.scales[static_cast<size_t>(row * (cols / q.group_size) + col / q.group_size)];
    }
    case DType::q4: {
      const long row = i / cols, col = i % cols;
      const int blocks = cols / kQ4Block, gi = static_cast<int>(col / (kQ4GroupBlocks * kQ4Block));
      const uint8_t* group = q.data.data() + static_cast<size_t>(row) * static_cast<size_t>(blocks) * kQ4BlockBytes +
                             static_cast<size_t>(gi) * kQ4GroupBlocks * kQ4BlockBytes;
      float v[kQ4GroupBlocks * kQ4Block];
      dequantize_q4_group(group, q4_group_blocks(blocks, gi), v);
      return v[col % (kQ4GroupBlocks * kQ4Block)];
    }
  }
  return 0.f;
}

}  // namespace moe::converter
