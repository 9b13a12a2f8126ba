// moe_infer's command line, without CLI11. moe_infer is the one tool that ships to
// boards, and CLI11 was over half of its binary (bench/README.md, "Binary size"); the
// host tools (moe_convert, moe_train, moe_merge) keep CLI11.
// Each option is declared once, with its help text; --help prints the table.
//   ArgParser args("moe_infer", "generate from a .moe model");
//   args.option("-m,--model", o.model, "model file");
//   args.option("-n,--tokens", o.n, "tokens to generate", 0, 1 << 30);
//   if (const int code = args.parse(argc, argv); code >= 0) return code;
// Accepted forms: `-m x`, `--model x`, `--model=x`; flags take no value.
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace moe::tools {

class ArgParser {
 public:
  ArgParser(const char* program, const char* description) : program_(program), description_(description) {}

  // A flag sets `target` to `value` when given ("--bench": true; "--no-stats": false).
  void flag(const char* names, bool& target, bool value, const char* help) {
    add(names, help, Kind::flag).flag = {&target, value};
  }
  void option(const char* names, std::string& target, const char* help) { add(names, help, Kind::text).text = &target; }
  void option(const char* names, int& target, const char* help, long min, long max) {
    Spec& s = add(names, help, Kind::integer);
    s.integer = &target;
    s.min = min;
    s.max = max;
    s.shown = std::to_string(target);
  }
  void option(const char* names, uint64_t& target, const char* help) {
    add(names, help, Kind::unsigned64).unsigned64 = &target;
    specs_.back().shown = std::to_string(target);
  }
  void option(const char* names, float& target, const char* help) {
    add(names, help, Kind::real).real = &target;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(target));
    specs_.back().shown = buf;
  }
  // The two options may not both be given (e.g. --prompt and --ids).
  void excludes(const char* a, const char* b) { exclusions_.push_back({a, b}); }

  // Returns -1 to go on, or the exit code: 0 after --help, 2 for a usage error (the
  // message is printed).
  int parse(int argc, char** argv) {
    given_.assign(specs_.size(), false);
    std::vector<bool>& given = given_;
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i], value;
      if (arg == "-h" || arg == "--help") return print_help(), 0;
      const size_t eq = arg.rfind("--", 0) == 0 ? arg.find('=') : std::string::npos;
      const bool inline_value = eq != std::string::npos;
      if (inline_value) {
        value = arg.substr(eq + 1);
        arg.resize(eq);
      }
      const int at = find(arg);
      if (at < 0) return error(arg.rfind('-', 0) == 0 ? "unknown option " + arg : "unexpected argument '" + arg + "'");
      Spec& s = specs_[static_cast<size_t>(at)];
      given[static_cast<size_t>(at)] = true;
      if (s.kind == Kind::flag) {
        if (inline_value) return error(arg + " takes no value");
        *s.flag.target = s.flag.value;
        continue;
      }
      if (!inline_value) {
        if (i + 1 >= argc) return error(arg + " needs a value");
        value = argv[++i];
      }
      if (const std::string why = store(s, value); !why.empty()) return error(arg + ": " + why);
    }
    for (const auto& [a, b] : exclusions_) {
      if (given[static_cast<size_t>(find(a))] && given[static_cast<size_t>(find(b))])
        return error(std::string(a) + " and " + b + " cannot be given together");
    }
    return -1;
  }

  // Was the option on the command line (after parse)? An empty --text "" still counts.
  bool given(const char* name) const {
    const int at = find(name);
    return at >= 0 && static_cast<size_t>(at) < given_.size() && given_[static_cast<size_t>(at)];
  }

 private:
  enum class Kind { flag, text, integer, unsigned64, real };
  std::vector<bool> given_;
  struct Spec {
    std::vector<std::string> names;
    const char* help;
    Kind kind;
    struct {
      bool* target;
      bool value;
    } flag{};
    std::string* text = nullptr;
    int* integer = nullptr;
    uint64_t* unsigned64 = nullptr;
    float* real = nullptr;
    long min = 0, max = 0;
    std::string shown;  // the default, for --help
  };

  Spec& add(const char* names, const char* help, Kind kind) {
    Spec s{};
    s.help = help;
    s.kind = kind;
    for (const char* p = names; *p;) {
      const char* comma = std::strchr(p, ',');
      const size_t n = comma ? static_cast<size_t>(comma - p) : std::strlen(p);
      s.names.emplace_back(p, n);
      p += n + (comma ? 1 : 0);
    }
    specs_.push_back(s);
    return specs_.back();
  }

  int find(const std::string& name) const {
    for (size_t i = 0; i < specs_.size(); ++i)
      for (const std::string& n : specs_[i].names)
        if (n == name) return static_cast<int>(i);
    return -1;
  }

  // Parses `value` into the option's target; returns why it cannot, or "".
  static std::string store(const Spec& s, const std::string& value) {
    const char* begin = value.c_str();
    char* end = nullptr;
    errno = 0;
    switch (s.kind) {
      case Kind::text: *s.text = value; return "";
      case Kind::integer: {
        const long v = std::strtol(begin, &end, 10);
        if (value.empty() || *end != '\0' || errno == ERANGE) return "'" + value + "' is not an integer";
        if (v < s.min || v > s.max)
          return "'" + value + "' is not in [" + std::to_string(s.min) + ", " + std::to_string(s.max) + "]";
        *s.integer = static_cast<int>(v);
        return "";
      }
      case Kind::unsigned64: {
        const unsigned long long v = std::strtoull(begin, &end, 10);
        if (value.empty() || value[0] == '-' || *end != '\0' || errno == ERANGE)
          return "'" + value + "' is not a non-negative integer";
        *s.unsigned64 = static_cast<uint64_t>(v);
        return "";
      }
      case Kind::real: {
        const float v = std::strtof(begin, &end);
        if (value.empty() || *end != '\0') return "'" + value + "' is not a number";
        // ERANGE on underflow still gives the nearest float (tiny or 0): a number. Only an
        // overflow, or NaN/Inf spelled out, is refused.
        if (!std::isfinite(v) || (errno == ERANGE && std::fabs(v) > 1.f))
          return "'" + value + "' is not a finite number a float can hold";
        *s.real = v;
        return "";
      }
      case Kind::flag: break;
    }
    return "";
  }

  int error(const std::string& message) const {
    std::fprintf(stderr, "%s: %s\nRun with --help for more information.\n", program_, message.c_str());
    return 2;
  }

  void print_help() const {
    std::printf("%s: %s\n\nOptions:\n  -h,--help  print this help and exit\n", program_, description_);
    for (const Spec& s : specs_) {
      std::string names;
      for (const std::string& n : s.names) names += (names.empty() ? "" : ",") + n;
      if (s.kind != Kind::flag) names += s.kind == Kind::text ? " TEXT" : s.kind == Kind::real ? " FLOAT" : " INT";
      std::printf("  %-26s %s", names.c_str(), s.help);
      if (!s.shown.empty()) std::printf(" [%s]", s.shown.c_str());
      std::printf("\n");
    }
  }

  const char* program_;
  const char* description_;
  std::vector<Spec> specs_;
  std::vector<std::pair<const char*, const char*>> exclusions_;
};

}  // namespace moe::tools
