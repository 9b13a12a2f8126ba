// The table of configs this host build was compiled for (CMake option MOE_CONFIGS, see
// cmake/MoeConfigs.cmake), and the lookup that picks the one a .moe file needs.
#pragma once

#include <cstdio>
#include <string>

#include "moe/compiled_configs.hpp"
#include "moe/config.hpp"

#ifndef MOE_EXTRA_CONFIGS_STRING  // moe_build_info (tools/CMakeLists.txt) defines these
#define MOE_EXTRA_CONFIGS_STRING ""
#endif
#ifndef MOE_BUILD_DIR_STRING
#define MOE_SOURCE_DIR_STRING "."
#define MOE_BUILD_DIR_STRING "build/release"
#endif

namespace moe::tools {

struct CompiledConfig {
  ModelConfig config;
  const char* key;
};
#define MOE_COMPILED_CONFIG_ENTRY(key) CompiledConfig{config_from_key(key), key},
inline constexpr CompiledConfig kCompiledConfigs[] = {MOE_COMPILED_CONFIGS(MOE_COMPILED_CONFIG_ENTRY)};
#undef MOE_COMPILED_CONFIG_ENTRY

inline bool is_compiled(const ModelConfig& c) {
  for (const CompiledConfig& e : kCompiledConfigs)
    if (e.config == c) return true;
  return false;
}

// One entry per compiled config: Runner<C> instantiated for each.
template <template <ModelConfig> class Runner>
struct CompiledModels {
  using Fn = decltype(&Runner<ModelConfig{}>::run);
  struct Entry {
    ModelConfig config;
    const char* key;
    Fn run;
  };
#define MOE_COMPILED_ENTRY(key) Entry{config_from_key(key), key, &Runner<config_from_key(key)>::run},
  static constexpr Entry entries[] = {MOE_COMPILED_CONFIGS(MOE_COMPILED_ENTRY)};
#undef MOE_COMPILED_ENTRY

  static const Entry* find(const ModelConfig& c) {
    for (const Entry& e : entries)
      if (e.config == c) return &e;
    return nullptr;
  }
};

inline std::string compiled_config_list(const char* separator) {
  std::string s;
  for (const CompiledConfig& e : kCompiledConfigs) s += (s.empty() ? "" : separator) + std::string(e.key);
  return s;
}

// The message for a file whose config this build lacks: the exact flag that adds it.
inline std::string missing_config_message(const char* program, const char* path, const ModelConfig& c) {
  const std::string key = ConfigKey(c).c_str();
  const std::string extra = MOE_EXTRA_CONFIGS_STRING;
  const std::string flag = extra.empty() ? key : extra + ";" + key;
  return std::string(program) + ": '" + path + "' needs model config " + key +
         ", which this build does not include.\n" + "  compiled configs: " + compiled_config_list(", ") + "\n" +
         "  add it and rebuild this program's build:  cmake -S " MOE_SOURCE_DIR_STRING " -B " MOE_BUILD_DIR_STRING
         " -DMOE_EXTRA_CONFIGS=\"" +
         flag + "\" && cmake --build " MOE_BUILD_DIR_STRING "\n";
}

}  // namespace moe::tools
