#include "platform/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

namespace moe {

void MappedFile::release() {
  if (data_ == nullptr) return;
  if (owned_) std::free(data_);
  else munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

MappedFile::~MappedFile() { release(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)), owned_(other.owned_) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    owned_ = other.owned_;
  }
  return *this;
}

const char* file_kind(unsigned mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

Error open_regular_file(const char* path, int& fd, struct stat* st_out, const char* what) {
  const char* named = what != nullptr ? what : "";
  const char* space = what != nullptr ? " " : "";
  fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return Error::make(ErrorCode::io, "cannot open %s%s'%s': %s", named, space, path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return Error::make(ErrorCode::io, "cannot stat '%s': %s", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return Error::make(ErrorCode::io, "cannot open %s%s'%s': it is %s, and only a regular file can be read", named,
                       space, path, file_kind(st.st_mode));
  }
  const int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  if (st_out != nullptr) *st_out = st;
  return Error::none();
}

Error MappedFile::open(const char* path, MappedFile& out) {
  out = MappedFile{};
  int fd = -1;
  struct stat st {};
  if (Error e = open_regular_file(path, fd, &st)) return e;
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

Error read_fully(int fd, void* buf, size_t size, const char* path, size_t offset) {
  size_t have = 0;
  while (have < size) {
    const ssize_t n = ::pread(fd, static_cast<char*>(buf) + have, size - have, static_cast<off_t>(offset + have));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return Error::make(ErrorCode::io, "cannot read '%s': %s", path,
                         n < 0 ? std::strerror(errno) : "it shrank while being read");
    have += static_cast<size_t>(n);
  }
  return Error::none();
}

void* allocate_in_huge_pages(size_t bytes) {
  const size_t rounded = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  void* p = bytes == 0 ? nullptr : std::aligned_alloc(kHugePageBytes, rounded);
#ifdef MADV_HUGEPAGE
  // Before the first touch, so the pages come huge; where THP is off this does nothing.
  if (p != nullptr) madvise(p, rounded, MADV_HUGEPAGE);
#endif
  return p;
}

void release_pages(const void* data, size_t n) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(data) + n) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

double physical_memory_bytes() {
  return static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

Error MappedFile::read(const char* path, MappedFile& out, int threads) {
  out = MappedFile{};
  int fd = -1;
  struct stat st {};
  if (Error e = open_regular_file(path, fd, &st)) return e;
  const auto size = static_cast<size_t>(st.st_size);
  void* p = allocate_in_huge_pages(size);
  if (p == nullptr) {
    close(fd);
    return size == 0 ? Error::make(ErrorCode::not_a_model, "'%s' is empty", path)
                     : Error::make(ErrorCode::io, "cannot read '%s': %lu bytes do not fit in memory", path,
                                   static_cast<unsigned long>(size));
  }
  // Slices of whole huge pages, one per thread: the copy's page faults (a fresh page's
  // zeroing, and on a VM the host backing it) run side by side.
  constexpr int kMaxThreads = 16;
  const size_t pages = (size + kHugePageBytes - 1) / kHugePageBytes;
  const int parts = static_cast<int>(std::min(static_cast<size_t>(std::clamp(threads, 1, kMaxThreads)), pages));
  Error errors[kMaxThreads];
  const auto read_part = [&](int i) {
    const size_t begin = pages * static_cast<size_t>(i) / static_cast<size_t>(parts) * kHugePageBytes;
    const size_t end =
        std::min(size, pages * static_cast<size_t>(i + 1) / static_cast<size_t>(parts) * kHugePageBytes);
    errors[i] = read_fully(fd, static_cast<char*>(p) + begin, end - begin, path, begin);
  };
  std::thread helpers[kMaxThreads];
  for (int i = 1; i < parts; ++i) helpers[i] = std::thread(read_part, i);
  read_part(0);
  for (int i = 1; i < parts; ++i) helpers[i].join();
  close(fd);
  for (int i = 0; i < parts; ++i)
    if (errors[i]) {
      std::free(p);
      return errors[i];
    }
  out.data_ = p;
  out.size_ = size;
  out.owned_ = true;
  return Error::none();
}

}  // namespace moe
