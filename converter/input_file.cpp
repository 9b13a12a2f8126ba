#include "converter/input_file.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

#include "converter/input_error.hpp"
#include "platform/mapped_file.hpp"

namespace moe::converter {
namespace {
// A file as it was read: its device and inode, and (since a long-lived process, a test
// runner, may see a deleted input's inode reused) its size and modification time.
struct Identity {
  dev_t dev;
  ino_t ino;
  off_t size;
  long long mtime_ns;
  auto operator<=>(const Identity&) const = default;
};
Identity identity(const struct stat& st) {
  return {st.st_dev, st.st_ino, st.st_size,
          static_cast<long long>(st.st_mtim.tv_sec) * 1000000000ll + st.st_mtim.tv_nsec};
}
std::mutex inputs_mutex;
int recording = 0;  // RecordInputs objects alive
std::map<Identity, std::string>& inputs() {
  static std::map<Identity, std::string> files;
  return files;
}
void record(const struct stat& st, const std::filesystem::path& path) {
  const std::lock_guard<std::mutex> lock(inputs_mutex);
  if (recording > 0) inputs().emplace(identity(st), path.string());
}
}  // namespace

RecordInputs::RecordInputs() {
  const std::lock_guard<std::mutex> lock(inputs_mutex);
  ++recording;
}

RecordInputs::~RecordInputs() {
  const std::lock_guard<std::mutex> lock(inputs_mutex);
  if (--recording == 0) inputs().clear();
}

std::string read_input_file(const std::filesystem::path& path, size_t max_bytes, const std::string& what) {
  std::string text = read_regular_file(path, max_bytes, what);
  note_input(path);
  return text;
}

std::string read_regular_file(const std::filesystem::path& path, size_t max_bytes, const std::string& what) {
  int fd = -1;
  struct stat st {};
  if (Error e = open_regular_file(path.c_str(), fd, &st, what.c_str())) throw InputError(e.what());
  if (static_cast<unsigned long long>(st.st_size) > max_bytes) {
    close(fd);
    throw InputError(what + " '" + path.string() + "' has " + std::to_string(st.st_size) + " bytes, more than the " +
                     std::to_string(max_bytes >> 20) + " MiB this tool reads");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  const Error e = read_fully(fd, text.data(), text.size(), path.c_str());
  close(fd);
  if (e) throw InputError(e.what());
  return text;
}

void note_input(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) record(st, path);
}

std::string input_at(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "";
  const std::lock_guard<std::mutex> lock(inputs_mutex);
  const auto it = inputs().find(identity(st));
  return it == inputs().end() ? "" : it->second;
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::string text = read_input_file(path, kMaxJsonBytes, path.filename().string());
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError("'" + path.string() + "' is not valid JSON: " + e.what());
  }
}

}  // namespace moe::converter
