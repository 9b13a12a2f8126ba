// moe_infer's output files (--json, --logits-out): written whole to a temporary file
// beside the destination, fsync'ed and renamed over it, so a crash or a full disk
// leaves the old file or the new one. A destination that exists and is not a regular
// file (a device, a FIFO, a directory) is refused. The converter's tools, which can
// overwrite their own inputs, use converter/atomic_file.hpp, which also refuses those.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace moe::tools {

// "" on success, else why the file could not be written (the destination is unchanged).
inline std::string write_output_file(const std::string& path, const std::string& text) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    return "cannot write '" + path + "': it exists and is not a regular file";
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string pattern = dir + "/." + base + ".tmp.XXXXXX";
  std::vector<char> temp(pattern.begin(), pattern.end());
  temp.push_back('\0');
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) return "cannot write '" + path + "': " + std::strerror(errno);
  const auto fail = [&](int err) {
    ::close(fd);
    ::unlink(temp.data());
    return "cannot write '" + path + "': " + std::strerror(err);
  };
  for (size_t at = 0; at < text.size();) {
    const ssize_t n = ::write(fd, text.data() + at, text.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(n < 0 ? errno : ENOSPC);
    at += static_cast<size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) return fail(errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp.data());
    return "cannot write '" + path + "': " + std::strerror(err);
  }
  if (::rename(temp.data(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.data());
    return "cannot write '" + path + "': " + std::strerror(err);
  }
  return "";
}

}  // namespace moe::tools
