#include "platform/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace moe {

MappedFile::~MappedFile() {
  if (data_ != nullptr) munmap(data_, size_);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Error MappedFile::open(const char* path, MappedFile& out) {
  out = MappedFile{};
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error::make(ErrorCode::io, "cannot open '%s': %s", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return Error::make(ErrorCode::io, "cannot stat '%s': %s", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return Error::make(ErrorCode::io, "'%s' is not a regular file", path);
  }
  if (st.st_size == 0) {
    close(fd);
    return Error::make(ErrorCode::not_a_model, "'%s' is empty", path);
  }
  const auto size = static_cast<size_t>(st.st_size);
  void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  close(fd);
  if (p == MAP_FAILED) return Error::make(ErrorCode::io, "cannot map '%s': %s", path, std::strerror(err));
  out.data_ = p;
  out.size_ = size;
  return Error::none();
}

}  // namespace moe
