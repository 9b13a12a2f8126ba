// A read-only memory map of a file (Linux and other POSIX systems): the engine reads the
// model in place, so loading a model costs page faults, not a copy.
#pragma once

#include <cstddef>

#include "moe/error.hpp"

struct stat;

namespace moe {

// "a directory", "a FIFO (named pipe)", ...: what a file of this st_mode is, for messages.
const char* file_kind(unsigned st_mode);

// Reads exactly n bytes of fd from `offset` into buf (pread: several threads may read one
// fd; EINTR retried); a short file is an error naming `path`.
Error read_fully(int fd, void* buf, size_t n, const char* path, size_t offset = 0);

// Transparent huge pages' size on x86-64 and AArch64 with 4 KB base pages.
inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// `bytes` (rounded up to whole huge pages) aligned to kHugePageBytes, asking the kernel
// for transparent huge pages (MADV_HUGEPAGE) before anything touches them; std::free it.
// nullptr when bytes is 0 or memory is short.
void* allocate_in_huge_pages(size_t bytes);

// This machine's physical memory in bytes (for refusing work that cannot fit).
double physical_memory_bytes();

// Drops the whole pages inside [data, data + n) of a read-only file mapping from this
// process's resident memory (they stay in the page cache; touching them again reads
// them back). Streaming readers call it on what they are done with, so reading a file
// of tens of GB through a mapping does not count it all as the process's memory.
void release_pages(const void* data, size_t n);

// Opens `path` for reading without blocking (a FIFO or a device would otherwise hang the
// open or the read), fstats it and refuses anything but a regular file, naming what it
// is. On success `fd` is a blocking descriptor the caller closes, and `st` (if given)
// describes the file. `what` ("corpus", ...) names the file in messages.
Error open_regular_file(const char* path, int& fd, struct stat* st = nullptr, const char* what = nullptr);

class MappedFile {
 public:
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Maps `path` (page-aligned, so 64-byte aligned as the model format needs); a regular
  // file only (open_regular_file).
  static Error open(const char* path, MappedFile& out);
  // Reads the whole file into memory instead: the file may then change or go away
  // without affecting the reader. The memory is 2 MB aligned and asks for transparent
  // huge pages (MADV_HUGEPAGE), so a reader streaming GBs of weights goes through one
  // TLB entry per 2 MB, where a mapping of the page cache may take one per 4 KB
  // (bench/README.md, "Weights in huge pages"). `threads` read slices of it side by side.
  static Error read(const char* path, MappedFile& out, int threads = 1);

  const void* data() const { return data_; }
  size_t size() const { return size_; }
  // True when read into memory, false when mapped.
  bool owned() const { return owned_; }

 private:
  void release();
  void* data_ = nullptr;
  size_t size_ = 0;
  bool owned_ = false;  // read into memory rather than mapped
};

}  // namespace moe
