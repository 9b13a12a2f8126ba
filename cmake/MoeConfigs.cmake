# The model configs moe_infer (and the benchmarks) are compiled for. Each is a key as
# moe_convert prints it (see engine/moe/config.hpp). A .moe file whose config is not in
# this list is refused with a message giving the flag that adds it:
#   cmake -B build -DMOE_EXTRA_CONFIGS="llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c64"
set(MOE_DEFAULT_CONFIGS
  "classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16"    # tests/fixtures/makemoe-tiny
  "llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128"    # tests/fixtures/mixtral-tiny-a
  "classic-d128-l8-h8-kv8-hd16-e8-k2-f512-v65-c32"  # moe_train --preset makemoe / quick (Shakespeare)
  "llama-d128-l8-h8-kv4-hd16-e8-k2-f512-v65-c32"    # moe_train --preset mixtral (Shakespeare)
  "classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c32"    # moe_train --preset tiny (Shakespeare)
  "llama-d64-l2-h4-kv2-hd32-e8-k2-f32-v256-c128-qkh"        # tests/fixtures/qwen3moe-tiny-a
  "llama-d64-l2-h4-kv4-hd16-e8-k2-f48-v256-c128-qkw"        # tests/fixtures/olmoe-tiny-a
  "llama-d64-l2-h4-kv2-hd16-e8-k2-f32-v256-c128"            # tests/fixtures/granitemoe-tiny-a
  "llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64"   # tests/fixtures/qwen2moe-tiny-a
  "llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v32000-c256"         # random Mixtral with Mistral's tokenizer (README, tests)
  "llama-d32-l2-h4-kv2-hd8-e4-k2-f64-v151936-c256-qkh"      # random Qwen3-MoE with Qwen3's tokenizer (tests)
)
set(MOE_EXTRA_CONFIGS "" CACHE STRING "Additional model config keys for moe_infer, ';'-separated")
# A board that runs one model needs one config: MOE_ONLY_CONFIGS replaces the defaults
# (the smallest moe_infer; the test suites need the defaults).
set(MOE_ONLY_CONFIGS "" CACHE STRING "Build moe_infer for exactly these config keys (replaces the defaults), ';'-separated")
if(MOE_ONLY_CONFIGS)
  set(MOE_DEFAULT_CONFIGS ${MOE_ONLY_CONFIGS})
endif()

# The key's grammar (engine/moe/config.hpp): the ten dimensions, then the optional parts.
set(MOE_CONFIG_KEY_REGEX "^(classic|llama)-d[0-9]+-l[0-9]+-h[0-9]+-kv[0-9]+-hd[0-9]+-e[0-9]+-k[0-9]+-f[0-9]+-v[0-9]+-c[0-9]+(-qk[hw])?(-qkvb)?(-s[0-9]+)?(-fd[0-9]+-dl[0-9a-f]+)?$")
set(MOE_CONFIGS ${MOE_DEFAULT_CONFIGS} ${MOE_EXTRA_CONFIGS})
list(REMOVE_DUPLICATES MOE_CONFIGS)
set(MOE_CONFIG_LINES "")
foreach(key IN LISTS MOE_CONFIGS)
  if(NOT key MATCHES "${MOE_CONFIG_KEY_REGEX}")
    message(FATAL_ERROR "MOE_EXTRA_CONFIGS: '${key}' is not a config key. Copy the key moe_convert prints, e.g. "
                        "llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128")
  endif()
  string(APPEND MOE_CONFIG_LINES "  X(\"${key}\") \\\n")
endforeach()
configure_file(${CMAKE_CURRENT_LIST_DIR}/compiled_configs.hpp.in ${CMAKE_BINARY_DIR}/generated/moe/compiled_configs.hpp @ONLY)
