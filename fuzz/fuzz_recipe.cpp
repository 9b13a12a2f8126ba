// Fuzz target: a moe_merge recipe as untrusted text, YAML or (when it starts with '{')
// JSON. Invariant: parsing ends, within the size, depth and alias-expansion bounds, in a
// MergeRecipe or an InputError; nothing else escapes, nothing crashes or exhausts memory
// (alias cycles and "billion laughs" included).
#include <cstddef>
#include <cstdint>
#include <string>

#include "converter/input_error.hpp"
#include "trainer/merge/recipe.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)moe::merge::parse_recipe_text(text, size > 0 && data[0] == '{', "recipe");
  } catch (const moe::InputError&) {
  }
  return 0;
}
