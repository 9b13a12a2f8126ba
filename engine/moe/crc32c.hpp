// CRC-32C (Castagnoli), slicing-by-8. The FlatBuffers Verifier checks structure only;
// this catches corrupted weight payloads before they turn into silent garbage.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moe {

namespace detail {
struct Crc32cTables {
  uint32_t t[8][256];
  constexpr Crc32cTables() : t{} {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xffu];
  }
};
inline constexpr Crc32cTables kCrc32c{};
}  // namespace detail

// Continue a CRC: crc32c_update(crc32c_update(0, a), b) == CRC of a followed by b.
inline uint32_t crc32c_update(uint32_t crc, const void* data, size_t n) {
  const auto& t = detail::kCrc32c.t;
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  while (n >= 8) {
    const uint32_t lo = (static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24) ^
                        crc;
    crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][p[4]] ^
          t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xffu];
  return ~crc;
}

inline uint32_t crc32c(const void* data, size_t n) { return crc32c_update(0, data, n); }

}  // namespace moe
