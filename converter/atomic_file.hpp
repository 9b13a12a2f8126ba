// Crash-safe output: write to a temporary file in the destination's directory, fsync,
// rename over the destination, fsync the directory. A crash or a full disk leaves
// either the old file or the new one, never half of one. The destination must be
// absent, a regular file (its mode is kept) or a symlink to one (the link is replaced,
// its target untouched); a device, FIFO, directory, read-only file or an input of this
// run (input_file.hpp) is refused when the AtomicFile is made, before any work.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace moe::converter {

class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path destination);  // creates the temp file
  ~AtomicFile();                                           // removes it unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);  // throws InputError (ENOSPC included)
  // At a byte offset (pwrite), for writers that place parts out of order; likewise.
  void write_at(uint64_t offset, const void* data, size_t n);
  void commit();  // fsync + rename + fsync(dir)
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  std::filesystem::path dest_;
  std::filesystem::path temp_;
  int fd_ = -1;
  unsigned mode_ = 0644;  // the replaced file's, or 0644
  bool committed_ = false;
};

void write_file_atomically(const std::filesystem::path& destination, const void* data, size_t n);
void write_file_atomically(const std::filesystem::path& destination, const std::string& text);

}  // namespace moe::converter
