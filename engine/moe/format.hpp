// printf-style formatting into a fixed buffer, without libc's printf family: on a
// microcontroller newlib's stdio allocates its FILE tables on first use, and the engine
// must not allocate even to report an error. Supports what the engine's messages use:
// %d %u %x %X %s %c %g %%, a zero-pad flag and width (%08x), and the l modifier (%lu).
#pragma once

#include <cmath>
#include <cstdarg>
#include <cstddef>

namespace moe {

namespace detail {
struct Out {
  char* buf;
  size_t cap;
  size_t len = 0;
  void put(char c) {
    if (len + 1 < cap) buf[len] = c;
    ++len;
  }
  void put(const char* s) {
    while (*s) put(*s++);
  }
};

inline void put_unsigned(Out& out, unsigned long v, unsigned base, bool upper, int width, char pad) {
  char digits[24];
  int n = 0;
  do {
    const unsigned d = static_cast<unsigned>(v % base);
    digits[n++] = static_cast<char>(d < 10 ? '0' + d : (upper ? 'A' : 'a') + d - 10);
    v /= base;
  } while (v != 0);
  for (int i = n; i < width; ++i) out.put(pad);
  while (n > 0) out.put(digits[--n]);
}

// %g-like: six significant digits, fixed notation for 1e-4 <= |v| < 1e6, else d.ddddde+XX,
// trailing zeros dropped.
inline void put_general(Out& out, double v) {
  if (std::isnan(v)) return out.put("nan");
  if (std::isinf(v)) return out.put(v < 0 ? "-inf" : "inf");
  if (v < 0) {
    out.put('-');
    v = -v;
  }
  if (v == 0) return out.put('0');
  int exp10 = static_cast<int>(std::floor(std::log10(v)));
  double mant = v / std::pow(10.0, exp10);
  long digits = std::lround(mant * 1e5);  // six significant digits
  if (digits >= 1000000) digits /= 10, ++exp10;
  char d[6];
  for (int i = 5; i >= 0; --i) d[i] = static_cast<char>('0' + digits % 10), digits /= 10;
  int last = 5;
  while (last > 0 && d[last] == '0') --last;
  if (exp10 >= -4 && exp10 < 6) {
    if (exp10 < 0) {
      out.put("0.");
      for (int i = -1; i > exp10; --i) out.put('0');
      for (int i = 0; i <= last; ++i) out.put(d[i]);
    } else {
      for (int i = 0; i <= exp10; ++i) out.put(d[i]);
      if (last > exp10) {
        out.put('.');
        for (int i = exp10 + 1; i <= last; ++i) out.put(d[i]);
      }
    }
    return;
  }
  out.put(d[0]);
  if (last > 0) {
    out.put('.');
    for (int i = 1; i <= last; ++i) out.put(d[i]);
  }
  out.put('e');
  out.put(exp10 < 0 ? '-' : '+');
  put_unsigned(out, static_cast<unsigned long>(exp10 < 0 ? -exp10 : exp10), 10, false, 2, '0');
}
}  // namespace detail

// Like vsnprintf: writes at most n - 1 characters and a terminator; returns the length
// the full text would have.
inline int vformat(char* buf, size_t n, const char* fmt, va_list args) {
  detail::Out out{buf, n};
  for (const char* p = fmt; *p; ++p) {
    if (*p != '%') {
      out.put(*p);
      continue;
    }
    ++p;
    char pad = ' ';
    if (*p == '0') pad = '0', ++p;
    int width = 0;
    while (*p >= '0' && *p <= '9') width = width * 10 + (*p++ - '0');
    bool is_long = false;
    if (*p == 'l') is_long = true, ++p;
    switch (*p) {
      case 'd': {
        const long v = is_long ? va_arg(args, long) : va_arg(args, int);
        if (v < 0) out.put('-');
        detail::put_unsigned(out, v < 0 ? 0ul - static_cast<unsigned long>(v) : static_cast<unsigned long>(v), 10,
                             false, width, pad);
        break;
      }
      case 'u':
      case 'x':
      case 'X': {
        const unsigned long v = is_long ? va_arg(args, unsigned long) : va_arg(args, unsigned);
        detail::put_unsigned(out, v, *p == 'u' ? 10 : 16, *p == 'X', width, pad);
        break;
      }
      case 's': {
        const char* s = va_arg(args, const char*);
        out.put(s ? s : "(null)");
        break;
      }
      case 'c': out.put(static_cast<char>(va_arg(args, int))); break;
      case 'g': detail::put_general(out, va_arg(args, double)); break;
      case '%': out.put('%'); break;
      default:  // not used by the engine: print it as written
        out.put('%');
        if (*p) out.put(*p);
        if (!*p) --p;
        break;
    }
  }
  if (n > 0) buf[out.len < n ? out.len : n - 1] = '\0';
  return static_cast<int>(out.len);
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
inline int
format(char* buf, size_t n, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  const int len = vformat(buf, n, fmt, args);
  va_end(args);
  return len;
}

}  // namespace moe
