// f32 -> the dtype a tensor is stored in. int8 is symmetric, one scale per group of
// `group_size` columns of a row: scale = max|w| / 127, q = round(w / scale). q4 is
// symmetric in blocks of 32 (tensor.hpp's q4 layout), its f16 scale chosen per block to
// minimise the block's squared error (Q4Rule).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/tensor.hpp"
#include "moe/workers.hpp"

namespace moe::converter {

struct Quantized {
  DType dtype = DType::f32;
  std::vector<uint8_t> data;  // little-endian elements (q4: the blocks)
  std::vector<float> scales;  // i8 only
  int group_size = 0;         // i8 and q4 (32)
};

// How a q4 block's scale is chosen.
enum class Q4Rule {
  // The f16 scale with the least squared error over the block among candidates that map
  // the largest |w| to -8 .. -6 or 6 .. 7.5, each refined once by least squares;
  // llama.cpp's rule is among them, so the error is never larger than its.
  least_squares,
  // llama.cpp's Q4_0, exactly (its quantize_row_q4_0_ref): scale = w_max / -8 where
  // w_max is the value of largest magnitude, q = min(15, (int)(w / scale + 8.5)).
  // Kept to compare against (bench/quant_accuracy).
  llama_q4_0,
};

// `group_size` 0 or one that does not divide cols: one scale per row. `name` is for
// messages (f16 overflow).
// The int8 group a tensor of `cols` columns gets: `group_size` where it divides the
// columns, else the whole row (also when group_size is 0).
inline int int8_group_size(int cols, int group_size) {
  return group_size > 0 && cols % group_size == 0 ? group_size : cols;
}

// int8 and int4 rows are shared among `workers` where it has threads (moe_convert's
// pool); the bytes do not depend on the split.
Quantized quantize(const std::vector<float>& w, int rows, int cols, DType dtype, int group_size,
                   const std::string& name, Q4Rule q4_rule = Q4Rule::least_squares, const Workers& workers = {});

// One q4 block: its f16 scale and 32 nibbles (0..15, value = (nibble - 8) * scale).
struct Q4Block {
  uint16_t scale = 0;
  uint8_t nibbles[kQ4Block] = {};
};
// The block of 32 values v by `rule`.
Q4Block quantize_block_q4(const float* v, Q4Rule rule);

// The value the engine will compute with for element i (tests and error reports).
float dequantized(const Quantized& q, int cols, long i);

}  // namespace moe::converter
