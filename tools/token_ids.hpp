// Token ids as the command lines take them: "1,2,3" (moe_infer --ids, moe_tokenize --decode).
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace moe::tools {

// Appends the ids to `out`; false (with `error` naming `option` and the bad item) when an
// item is not an integer in [0, 2^31).
inline bool parse_token_ids(const std::string& text, const char* option, std::vector<int32_t>& out,
                            std::string& error) {
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = text.find(',', at);
    const std::string item = text.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    size_t used = 0;
    long v = -1;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0 || v > 0x7fffffff) {
      error.assign(option).append(": '").append(item).append(
          "' is not a token id (expected comma-separated integers, e.g. 1,2,3)");
      return false;
    }
    out.push_back(static_cast<int32_t>(v));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return true;
}

}  // namespace moe::tools
