// A read-only memory map of a file (Linux and other POSIX systems): the engine reads the
// model in place, so loading a model costs page faults, not a copy.
#pragma once

#include <cstddef>

#include "moe/error.hpp"

namespace moe {

class MappedFile {
 public:
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Maps `path` (page-aligned, so 64-byte aligned as the model format needs).
  static Error open(const char* path, MappedFile& out);

  const void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace moe
