// Small pieces the host command-line tools share (moe_convert, moe_train, moe_merge;
// moe_infer parses with tools/arg_parser.hpp).
#pragma once

#include <CLI/CLI.hpp>

#include "tools/number_format.hpp"

namespace moe::tools {

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
