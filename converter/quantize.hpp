// f32 -> the dtype a tensor is stored in. int8 is symmetric, one scale per group of
// `group_size` columns of a row: scale = max|w| / 127, q = round(w / scale).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/tensor.hpp"

namespace moe::converter {

struct Quantized {
  DType dtype = DType::f32;
  std::vector<uint8_t> data;  // little-endian elements
  std::vector<float> scales;  // i8 only
  int group_size = 0;         // i8 only
};

// `group_size` 0 or one that does not divide cols: one scale per row. `name` is for
// messages (f16 overflow).
// The int8 group a tensor of `cols` columns gets: `group_size` where it divides the
// columns, else the whole row (also when group_size is 0).
inline int int8_group_size(int cols, int group_size) {
  return group_size > 0 && cols % group_size == 0 ? group_size : cols;
}

Quantized quantize(const std::vector<float>& w, int rows, int cols, DType dtype, int group_size,
                   const std::string& name);

// The value the engine will compute with for element i (tests and error reports).
float dequantized(const Quantized& q, int cols, long i);

}  // namespace moe::converter
