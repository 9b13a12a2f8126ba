// Views of weights inside the model file. Nothing here owns memory: a view points into
// the mapped .moe buffer (or into flash on a microcontroller).
#pragma once

#include <cstdint>

#include "moe/fp16.hpp"

namespace moe {

enum class DType : uint8_t { f32 = 0, f16 = 1, i8 = 2, q4 = 3 };  // values match moe.fb.DType

constexpr const char* dtype_name(DType t) {
  return t == DType::f32 ? "f32" : t == DType::f16 ? "f16" : t == DType::i8 ? "i8" : "q4";
}

// 4-bit weights (q4), laid out so that a SIMD lane holds one block from start to end.
// A row's 32-column blocks are taken 16 at a time into groups (the row's last group holds
// the rest, g = 1..16 blocks); a group of g blocks covers 32g columns in 18g bytes: g f16
// scales, then 16g bytes of nibbles. Its columns form 8 chunks of 4g: column c is chunk
// k = c / 4g, and belongs to block j = (c % 4g) / 4 -- so a block is 4 adjacent columns
// of each chunk, and a vector of 4-byte lanes over a chunk has block j in lane j.
// Chunks pair up: nibble byte 4g*p + b holds column 4g*2p + b (low nibble) and column
// 4g*(2p+1) + b (high nibble). value = (nibble - 8) * scale of its block.
inline constexpr int kQ4Block = 32;        // columns per block (one scale)
inline constexpr int kQ4GroupBlocks = 16;  // blocks per group
inline constexpr int kQ4BlockBytes = 18;   // f16 scale + 32 nibbles

// Blocks in group `group` of a row of `blocks` blocks.
constexpr int q4_group_blocks(int blocks, int group) {
  return blocks - group * kQ4GroupBlocks < kQ4GroupBlocks ? blocks - group * kQ4GroupBlocks : kQ4GroupBlocks;
}

// Bytes of `elements` values of a dtype (q4: whole blocks of 32).
constexpr uint64_t data_bytes(DType t, uint64_t elements) {
  return t == DType::f32   ? 4 * elements
         : t == DType::f16 ? 2 * elements
         : t == DType::i8  ? elements
                           : elements / kQ4Block * kQ4BlockBytes;
}

// A row-major [rows, cols] weight matrix, as nn.Linear stores it: y = W x.
// For i8, element (r, c) = data[r*cols + c] * scales[r*(cols/group_size) + c/group_size].
// For q4, a row is cols/32 * 18 bytes of groups (above) and group_size is 32.
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
  const uint8_t* q4_row(int r) const {
    return static_cast<const uint8_t*>(data) + static_cast<long>(r) * (cols / kQ4Block) * kQ4BlockBytes;
  }
  int groups_per_row() const { return cols / group_size; }
};

// Norm weights and biases: always f32.
struct Vector {
  const float* data = nullptr;
  int n = 0;
};

// Where column c of a q4 group of g blocks lives: its block, its index within the block
// (chunk k's 4 columns of the block are indices 4k..4k+3), and its nibble byte and half.
struct Q4Column {
  int block, index, byte;
  bool high;
};
constexpr Q4Column q4_column(int c, int g) {
  const int chunk = 4 * g, k = c / chunk, b = c % chunk;
  return {b / 4, 4 * k + b % 4, chunk * (k / 2) + b, k % 2 == 1};
}

// The 32g values of a q4 group of g blocks, in column order (the reference every q4
// kernel is held to).
inline void dequantize_q4_group(const uint8_t* group, int g, float* out) {
  float scale[kQ4GroupBlocks];
  for (int j = 0; j < g; ++j) scale[j] = half_to_float(static_cast<uint16_t>(group[2 * j] | group[2 * j + 1] << 8));
  const uint8_t* nibbles = group + 2 * g;
  for (int c = 0; c < kQ4Block * g; ++c) {
    const Q4Column at = q4_column(c, g);
    out[c] = static_cast<float>((at.high ? nibbles[at.byte] >> 4 : nibbles[at.byte] & 15) - 8) * scale[at.block];
  }
}

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
    case DType::q4: {
      const uint8_t* group = m.q4_row(row);
      const int blocks = m.cols / kQ4Block;
      for (int gi = 0; gi * kQ4GroupBlocks < blocks; ++gi) {
        const int g = q4_group_blocks(blocks, gi);
        dequantize_q4_group(group, g, out + gi * kQ4GroupBlocks * kQ4Block);
        group += g * kQ4BlockBytes;
      }
      break;
    }
  }
}

}  // namespace moe
