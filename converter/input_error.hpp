// Bad input from the user (a file, a flag, a config value, a recipe): the host tools
// (moe_convert, moe_train, moe_merge, moe_random_checkpoint) throw InputError with a
// message meant for the user; each CLI prints it and exits non-zero. One type for all
// of them, so a tool that calls another's library catches one thing.
#pragma once

#include <stdexcept>
#include <string>

namespace moe {

class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace moe
