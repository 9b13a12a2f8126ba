// Tools (converter, trainer) report bad input by throwing ConvertError with a message
// meant for the user; the CLI prints it and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace moe::convert {

class ConvertError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace moe::convert
