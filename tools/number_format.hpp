// "1234567" -> "1,234,567": the sizes and counts the tools print for people to read.
#pragma once

#include <string>

namespace moe::tools {

inline std::string grouped(long long v) {
  const std::string digits = std::to_string(v < 0 ? -v : v);
  std::string out = v < 0 ? "-" : "";
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace moe::tools
