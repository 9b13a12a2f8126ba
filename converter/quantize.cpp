#include "converter/quantize.hpp"

#include <cmath>
#include <cstring>

#include "converter/input_error.hpp"
#include "moe/fp16.hpp"

namespace moe::converter {

Quantized quantize(const std::vector<float>& w, int rows, int cols, DType dtype, int group_size,
                   const std::string& name) {
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
      for (int r = 0; r < rows; ++r) {
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
      }
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
  }
  return 0.f;
}

}  // namespace moe::converter
