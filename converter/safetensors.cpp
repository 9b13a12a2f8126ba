#include "converter/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <set>
#include <fstream>
#include <nlohmann/json.hpp>

#include "converter/atomic_file.hpp"
#include "converter/input_error.hpp"
#include "converter/input_file.hpp"
#include "moe/fp16.hpp"

namespace moe::converter {

using nlohmann::json;

int safetensors_dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2") return 1;
  return 0;
}

int64_t SafetensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string SafetensorInfo::shape_text() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) {
  std::string where = std::string("'");
  where += path.string();
  where += "'";
  if (Error e = MappedFile::open(path.c_str(), map_)) throw InputError(e.what());
  note_input(path);
  const auto* bytes = static_cast<const uint8_t*>(map_.data());
  const size_t size = map_.size();
  if (size < 8) throw InputError(where + " is not a safetensors file: only " + std::to_string(size) + " bytes");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | bytes[i];
  if (header_len > size - 8)
    throw InputError(where + " is not a safetensors file or is truncated: header length " + std::to_string(header_len) +
                     " does not fit in " + std::to_string(size) + " bytes");
  if (header_len > kMaxSafetensorsHeader)
    throw InputError(where + " has a safetensors header of " + std::to_string(header_len) + " bytes; at most " +
                     std::to_string(kMaxSafetensorsHeader >> 20) + " MiB is read (real checkpoints' are under 2 MB)");
  json header;
  std::string duplicate;  // a name the header gives twice (JSON parsers keep the last: refused)
  std::set<std::string> names;
  const json::parser_callback_t note_names = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && !names.insert(parsed.get<std::string>()).second &&
        duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_len, note_names);
  } catch (const json::exception& e) {
    throw InputError(where + " has a malformed safetensors header: " + e.what());
  }
  if (!header.is_object()) throw InputError(where + " has a malformed safetensors header: not a JSON object");
  if (!duplicate.empty()) throw InputError(where + " names tensor '" + duplicate + "' twice in its header");
  const uint8_t* data_start = bytes + 8 + header_len;
  const size_t data_size = size - 8 - header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string what = "tensor '" + name + "' in " + where;
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets") ||
        !entry["dtype"].is_string() || !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2)
      throw InputError(what + " has a malformed header entry");
    SafetensorInfo info;
    info.name = name;
    info.file = path;
    info.dtype = entry["dtype"].get<std::string>();
    int64_t elements = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) throw InputError(what + " has a malformed shape");
      const uint64_t v = d.get<uint64_t>();
      if (v > (1ull << 40) || (v > 0 && static_cast<uint64_t>(elements) > (1ull << 40) / v))
        throw InputError(what + " has an implausibly large shape");
      info.shape.push_back(static_cast<int64_t>(v));
      elements *= static_cast<int64_t>(v);
    }
    const auto& off = entry["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw InputError(what + " has malformed data_offsets");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size)
      throw InputError(what + " lies outside the file (offsets " + std::to_string(begin) + ".." + std::to_string(end) +
                       ", data section " + std::to_string(data_size) + " bytes): the file is truncated or corrupt");
    const int esize = safetensors_dtype_size(info.dtype);
    if (esize != 0 && static_cast<uint64_t>(elements) * static_cast<uint64_t>(esize) != end - begin)
      throw InputError(what + " has " + std::to_string(end - begin) + " bytes, but shape " + info.shape_text() +
                       " of " + info.dtype + " needs " + std::to_string(elements * esize));
    info.data = data_start + begin;
    info.bytes = end - begin;
    tensors_.emplace(name, std::move(info));
  }
  // Each byte of the data section belongs to at most one tensor.
  std::vector<const SafetensorInfo*> by_offset;
  for (const auto& [name, info] : tensors_) by_offset.push_back(&info);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->data < b->data; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorInfo& a = *by_offset[i - 1];
    if (a.data + a.bytes > by_offset[i]->data)
      throw InputError(where + ": tensors '" + a.name + "' and '" + by_offset[i]->name +
                       "' overlap in the data section: the file is corrupt");
  }
}

TensorStore::TensorStore(const std::filesystem::path& dir) {
  const auto index_path = dir / "model.safetensors.index.json";
  const auto single = dir / "model.safetensors";
  std::vector<std::filesystem::path> shards;
  std::map<std::string, std::string> weight_map;
  if (std::filesystem::exists(index_path)) {
    json index;
    try {
      index = json::parse(read_input_file(index_path, kMaxJsonBytes, "shard index"));
    } catch (const json::exception& e) {
      throw InputError("cannot read '" + index_path.string() + "': " + e.what());
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      throw InputError("'" + index_path.string() + "' has no weight_map object");
    std::map<std::string, bool> seen;
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string())
        throw InputError("'" + index_path.string() + "': weight_map entry '" + name + "' is not a file name");
      const std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
        throw InputError("'" + index_path.string() + "': shard name '" + f + "' must be a plain file name");
      weight_map[name] = f;
      if (!seen[f]) shards.push_back(dir / f), seen[f] = true;
    }
  } else if (std::filesystem::exists(single)) {
    shards.push_back(single);
  } else {
    throw InputError("no model.safetensors or model.safetensors.index.json in '" + dir.string() + "'");
  }
  for (const auto& shard : shards) {
    if (!std::filesystem::exists(shard))
      throw InputError("shard '" + shard.string() + "' named by the index is missing");
    files_.push_back(std::make_unique<SafetensorsFile>(shard));
    for (const auto& [name, info] : files_.back()->tensors()) {
      if (index_.count(name))
        throw InputError("tensor '" + name + "' appears in both '" + index_.at(name)->file.string() + "' and '" +
                         shard.string() + "'");
      index_[name] = &info;
    }
  }
  for (const auto& [name, file] : weight_map) {
    if (!index_.count(name))
      throw InputError("the index says tensor '" + name + "' is in '" + file + "', but that shard does not hold it");
  }
}

const SafetensorInfo& TensorStore::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw InputError("missing tensor '" + name + "'");
  return *it->second;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& kv : index_) out.push_back(kv.first);
  return out;
}

std::vector<float> TensorStore::read_f32(const std::string& name) const {
  return read_f32(name, 0, info(name).elements());
}

std::vector<float> TensorStore::read_f32(const std::string& name, int64_t offset, int64_t count) const {
  const SafetensorInfo& t = info(name);
  if (offset < 0 || count < 0 || offset + count > t.elements())
    throw InputError("internal: elements [" + std::to_string(offset) + ", " + std::to_string(offset + count) +
                     ") of tensor '" + name + "' " + t.shape_text() + " requested");
  const auto n = static_cast<size_t>(count);
  std::vector<float> out(n);
  if (t.dtype == "F32") {
    std::memcpy(out.data(), t.data + offset * 4, n * 4);
  } else if (t.dtype == "F16" || t.dtype == "BF16") {
    const uint8_t* d = t.data + offset * 2;
    if (t.dtype == "F16") {
      for (size_t i = 0; i < n; ++i) out[i] = half_to_float(static_cast<uint16_t>(d[2 * i] | d[2 * i + 1] << 8));
    } else {
      for (size_t i = 0; i < n; ++i) out[i] = f32_from_bits(static_cast<uint32_t>(d[2 * i] | d[2 * i + 1] << 8) << 16);
    }
  } else {
    throw InputError("tensor '" + name + "' has dtype " + t.dtype + "; moe_convert reads F32, F16 and BF16");
  }
  const size_t esize = t.dtype == "F32" ? 4 : 2;
  release_pages(t.data + offset * static_cast<int64_t>(esize), n * esize);  // read once: not ours to keep
  return out;
}

SafetensorOut f32_tensor(std::string name, std::vector<int64_t> shape, const float* values) {
  SafetensorOut t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.data.resize(static_cast<size_t>(n) * 4);
  std::memcpy(t.data.data(), values, t.data.size());
  return t;
}

std::vector<uint8_t> encode_safetensors_header(const std::vector<SafetensorEntry>& entries,
                                               const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : entries) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes}}};
    offset += t.bytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // keeps the data 8-byte aligned
  std::vector<uint8_t> out(8 + text.size());
  const uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(len >> (8 * i));
  std::memcpy(out.data() + 8, text.data(), text.size());
  return out;
}

std::vector<uint8_t> encode_safetensors(const std::vector<SafetensorOut>& tensors,
                                        const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorEntry> entries;
  for (const auto& t : tensors) entries.push_back({t.name, t.dtype, t.shape, t.data.size()});
  std::vector<uint8_t> out = encode_safetensors_header(entries, metadata);
  for (const auto& t : tensors) out.insert(out.end(), t.data.begin(), t.data.end());
  return out;
}

void append_as_dtype(const float* values, size_t n, const std::string& dtype, std::vector<uint8_t>& out) {
  const size_t at = out.size();
  if (dtype == "F32") {
    out.resize(at + n * 4);
    std::memcpy(out.data() + at, values, n * 4);
    return;
  }
  if (dtype != "F16" && dtype != "BF16") throw InputError("internal: cannot write dtype " + dtype);
  out.resize(at + n * 2);
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    if (dtype == "F16") {
      h = float_to_half(values[i]);
    } else {
      const uint32_t u = bits_from_f32(values[i]);
      h = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // finite inputs only
    }
    out[at + 2 * i] = static_cast<uint8_t>(h);
    out[at + 2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
}

void write_safetensors(const std::filesystem::path& path, const std::vector<SafetensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::vector<uint8_t> bytes = encode_safetensors(tensors, metadata);
  write_file_atomically(path, bytes.data(), bytes.size());
}

}  // namespace moe::converter
