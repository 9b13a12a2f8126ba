#include "converter/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "converter/input_error.hpp"
#include "converter/input_file.hpp"
#include "platform/mapped_file.hpp"

namespace moe::converter {
namespace {
std::string errno_text(int err) { return std::strerror(err); }
std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}
}  // namespace

AtomicFile::AtomicFile(std::filesystem::path destination) : dest_(std::move(destination)) {
  const std::filesystem::path dir = dest_.has_parent_path() ? dest_.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw InputError("cannot write '" + dest_.string() + "': directory '" + dir.string() + "' does not exist");
  // What is there already decides: nothing, a regular file (replaced, its mode kept), or
  // a symlink to one (the link is replaced, its target untouched). Anything else (a
  // device, a FIFO, a directory, a link to one), an input of this run or a read-only
  // file is refused before any work is lost.
  struct stat st {};
  if (::lstat(dest_.c_str(), &st) == 0) {
    struct stat target = st;
    const bool link = S_ISLNK(st.st_mode);
    const bool dangling = link && ::stat(dest_.c_str(), &target) != 0;
    if (!dangling && !S_ISREG(target.st_mode))
      throw InputError("cannot write '" + dest_.string() + "': it is " + (link ? "a symbolic link to " : "") +
                       file_kind(target.st_mode) + ", and outputs replace only regular files");
    if (!link) {
      if (const std::string input = input_at(dest_); !input.empty())
        throw InputError("cannot write '" + dest_.string() + "': it is an input of this run ('" + input +
                         "'), and writing it would destroy it; choose another output");
      if ((st.st_mode & 0222) == 0)
        throw InputError("cannot write '" + dest_.string() + "': it is read-only (mode " + mode_text(st.st_mode) +
                         "); make it writable or remove it to replace it");
      mode_ = st.st_mode & 07777;
    }
  }
  std::string name = std::string(".") + dest_.filename().string();
  name += ".tmp.XXXXXX";
  std::string pattern = (dir / name).string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  fd_ = mkstemp(buf.data());
  if (fd_ < 0) throw InputError("cannot create a temporary file in '" + dir.string() + "': " + errno_text(errno));
  temp_ = buf.data();
  fchmod(fd_, mode_);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) close(fd_);
  if (!committed_ && !temp_.empty()) unlink(temp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw InputError("cannot write '" + dest_.string() + "': " + errno_text(errno) + " (nothing was replaced)");
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw InputError("cannot write '" + dest_.string() + "': " + errno_text(errno) + " (nothing was replaced)");
    }
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

void AtomicFile::commit() {
  if (fsync(fd_) != 0)
    throw InputError("cannot write '" + dest_.string() + "': fsync failed: " + errno_text(errno) +
                     " (nothing was replaced)");
  if (close(fd_) != 0) {
    fd_ = -1;
    throw InputError("cannot write '" + dest_.string() + "': " + errno_text(errno) + " (nothing was replaced)");
  }
  fd_ = -1;
  if (std::rename(temp_.c_str(), dest_.c_str()) != 0)
    throw InputError("cannot rename '" + temp_.string() + "' to '" + dest_.string() + "': " + errno_text(errno));
  committed_ = true;
  // Make the rename itself durable.
  const std::filesystem::path dir = dest_.has_parent_path() ? dest_.parent_path() : std::filesystem::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
}

void write_file_atomically(const std::filesystem::path& destination, const void* data, size_t n) {
  AtomicFile f(destination);
  f.write(data, n);
  f.commit();
}

void write_file_atomically(const std::filesystem::path& destination, const std::string& text) {
  write_file_atomically(destination, text.data(), text.size());
}

}  // namespace moe::converter
