// Views of weights inside the model file. Nothing here owns memory: a view points into
// the mapped .moe buffer (or into flash on a microcontroller).
#pragma once

#include <cstdint>

#include "moe/fp16.hpp"

namespace moe {

enum class DType : uint8_t { f32 = 0, f16 = 1, i8 = 2 };  // values match moe.fb.DType

constexpr const char* dtype_name(DType t) { return t == DType::f32 ? "f32" : t == DType::f16 ? "f16" : "i8"; }
constexpr int dtype_bytes(DType t) { return t == DType::f32 ? 4 : t == DType::f16 ? 2 : 1; }

// A row-major [rows, cols] weight matrix, as nn.Linear stores it: y = W x.
// For i8, element (r, c) = data[r*cols + c] * scales[r*(cols/group_size) + c/group_size].
struct Matrix {
  const void* data = nullptr;
  const float* scales = nullptr;  // i8 only
  DType dtype = DType::f32;
  int rows = 0;
  int cols = 0;
  int group_size = 0;  // i8 only; == cols for one scale per row

  const float* f32() const { return static_cast<const float*>(data); }
  const uint16_t* f16() const { return static_cast<const uint16_t*>(data); }
  const int8_t* i8() const { return static_cast<const int8_t*>(data); }
  int groups_per_row() const { return cols / group_size; }
};

// Norm weights and biases: always f32.
struct Vector {
  const float* data = nullptr;
  int n = 0;
};

// One row of a matrix as f32 (embedding lookups; not on a hot path).
inline void dequantize_row(const Matrix& m, int row, float* out) {
  const long base = static_cast<long>(row) * m.cols;
  switch (m.dtype) {
    case DType::f32:
      for (int c = 0; c < m.cols; ++c) out[c] = m.f32()[base + c];
      break;
    case DType::f16:
      for (int c = 0; c < m.cols; ++c) out[c] = half_to_float(m.f16()[base + c]);
      break;
    case DType::i8: {
      const float* s = m.scales + static_cast<long>(row) * m.groups_per_row();
      for (int c = 0; c < m.cols; ++c) out[c] = static_cast<float>(m.i8()[base + c]) * s[c / m.group_size];
      break;
    }
  }
}

}  // namespace moe
