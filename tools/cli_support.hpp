// Small pieces the host command-line tools share (moe_convert, moe_train, moe_merge;
// moe_infer parses with tools/arg_parser.hpp).
#pragma once

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdlib>
#include <string>

#include "tools/number_format.hpp"

namespace moe::tools {

// A number in [lo, hi], finite, said in short form: CLI11's own Range lets NaN through
// and prints DBL_MAX as 300 digits.
inline CLI::Validator in_range(double lo, double hi) {
  char text[64];
  std::snprintf(text, sizeof text, "[%g, %g]", lo, hi);
  const std::string range = text;
  return CLI::Validator(
      [lo, hi, range](std::string& value) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(value.c_str(), &end);
        if (value.empty() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi)
          return "'" + value + "' is not a number in " + range;
        return "";
      },
      "NUMBER in " + range);
}

// Parses the command line. Returns -1 to go on, or the exit code: 0 after --help, 2 for
// a usage error (CLI11 has printed the message).
inline int parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
}

}  // namespace moe::tools
