// convert_to_file: a .moe file of any size, written as it is made. Small models go
// through convert_checkpoint (in memory, format version 1 or 2). Large ones are streamed
// in format version 3: the FlatBuffer (metadata only) first, then each tensor's bytes at
// a 64-byte aligned offset after it. One tensor is in memory at a time, and the source
// tensors' pages are released once read, so peak memory is a few times the largest
// tensor, not the model.
//
// The FlatBuffer's size does not depend on the values it holds (every field is written,
// ForceDefaults), so it is built once with placeholders to learn where the tensors
// start, and again at the end with their offsets and checksums.
#include <sys/mman.h>

#include <cstring>
#include <map>

#include "converter/atomic_file.hpp"
#include "converter/converter_parts.hpp"
#include "converter/input_error.hpp"
#include "converter/quantize.hpp"
#include "moe/crc32c.hpp"
#include "moe/model_file.hpp"
#include "platform/mapped_file.hpp"
#include "tools/number_format.hpp"

namespace moe::converter {
namespace {

struct Record {
  TensorSpec spec;
  std::string name;
  DType dtype = DType::f32;
  int group_size = 0;
  uint32_t crc = 0;
  uint64_t data_offset = 0, data_bytes = 0, scales_offset = 0, scales_count = 0;
};

uint64_t align64(uint64_t n) { return (n + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment; }

std::vector<uint8_t> metadata(const Checkpoint& ck, const QuantRecipe& recipe, uint32_t version,
                              const std::vector<Record>& records) {
  flatbuffers::FlatBufferBuilder fbb(1 << 20);
  fbb.ForceDefaults(true);
  std::vector<flatbuffers::Offset<fb::Tensor>> tensors;
  for (const Record& r : records) {
    const auto name_off = fbb.CreateString(r.name);
    const std::vector<uint32_t> shape = r.spec.is_matrix() ? std::vector<uint32_t>{static_cast<uint32_t>(r.spec.rows),
                                                                                   static_cast<uint32_t>(r.spec.cols)}
                                                           : std::vector<uint32_t>{static_cast<uint32_t>(r.spec.rows)};
    const auto shape_off = fbb.CreateVector(shape);
    fb::TensorBuilder tb(fbb);
    tb.add_name(name_off);
    tb.add_role(static_cast<fb::TensorRole>(r.spec.role));
    tb.add_layer(static_cast<int16_t>(r.spec.layer));
    tb.add_expert(static_cast<int16_t>(r.spec.expert));
    tb.add_dtype(static_cast<fb::DType>(r.dtype));
    tb.add_shape(shape_off);
    tb.add_group_size(static_cast<uint32_t>(r.group_size));
    tb.add_crc32c(r.crc);
    tb.add_data_offset(r.data_offset);
    tb.add_data_bytes(r.data_bytes);
    tb.add_scales_offset(r.scales_offset);
    tb.add_scales_count(r.scales_count);
    tensors.push_back(tb.Finish());
  }
  const auto tensors_off = fbb.CreateVector(tensors);
  fb::FinishSizePrefixedModelBuffer(fbb, detail::create_model(fbb, ck, recipe, version, tensors_off));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::string gb(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GB", bytes / 1e9);
  return text;
}

// Refuses, before any work, a file the destination's file system has no room for.
void check_disk_space(const std::filesystem::path& output, double file_bytes, const ModelConfig& config) {
  std::error_code ec;
  const std::filesystem::path dir = output.has_parent_path() ? output.parent_path() : std::filesystem::path(".");
  const auto space = std::filesystem::space(dir, ec);
  if (!ec && file_bytes > static_cast<double>(space.available))
    throw InputError("the .moe file of " + std::string(ConfigKey(config).c_str()) + " (" +
                     tools::grouped(static_cast<long long>(total_params(config))) + " parameters) would take " +
                     gb(file_bytes) + " of disk, and '" + dir.string() + "' has " +
                     gb(static_cast<double>(space.available)) + " free");
}

Conversion stream(const Checkpoint& ck, const ConvertOptions& options, const std::filesystem::path& output) {
  const ModelConfig& cfg = ck.config;
  const QuantRecipe& recipe = options.recipe;
  Conversion out = detail::begin_conversion(ck, recipe);
  out.format_version =
      required_format_version(ck.config, ck.constants, ck.bpe != nullptr, true, detail::stores_q4(ck.config, recipe));
  // Every source tensor present with its shape before a byte is written: a missing shard
  // shows now, not an hour into a conversion.
  std::vector<Record> records;
  std::map<std::string, size_t> first_of;  // share key -> the record that stores the bytes
  for_each_tensor_spec(cfg, [&](const TensorSpec& spec) {
    const std::vector<TensorSource> sources = ck.sources(spec);
    ck.check_sources(spec, sources);
    Record r;
    r.spec = spec;
    r.name = detail::stored_name(sources);
    r.dtype = recipe.dtype_for(spec);
    const int cols = spec.is_matrix() ? spec.cols : spec.rows;
    r.group_size = r.dtype == DType::i8   ? int8_group_size(cols, recipe.group_size)
                   : r.dtype == DType::q4 ? kQ4Block
                                          : 0;
    r.data_bytes = data_bytes(r.dtype, static_cast<uint64_t>(spec.elements()));
    if (r.dtype == DType::i8)
      r.scales_count =
          static_cast<uint64_t>(spec.is_matrix() ? spec.rows : 1) * static_cast<uint64_t>(cols / r.group_size);
    records.push_back(std::move(r));
  });
  const size_t header_size = metadata(ck, recipe, out.format_version, records).size();
  const uint64_t first_offset = align64(header_size);

  std::map<int, ClassReport> classes;
  int ungrouped = 0;
  AtomicFile file(output);
  uint64_t at = first_offset, end = first_offset;
  int index = 0;
  for_each_tensor_spec(cfg, [&](const TensorSpec& spec) {
    Record& r = records[static_cast<size_t>(index++)];
    const std::vector<TensorSource> sources = ck.sources(spec);
    auto [shared, first_use] = first_of.try_emplace(detail::share_key(sources[0], r.dtype), &r - records.data());
    if (!first_use) {  // tied: the same bytes
      const Record& s = records[shared->second];
      r.crc = s.crc, r.data_offset = s.data_offset, r.scales_offset = s.scales_offset;
      detail::tally(classes, spec, r.dtype, 0, false);
      return;
    }
    const int rows = spec.is_matrix() ? spec.rows : 1, cols = spec.is_matrix() ? spec.cols : spec.rows;
    const Quantized q =
        quantize(ck.load(spec), rows, cols, r.dtype, recipe.group_size, r.name, recipe.q4_rule, options.workers);
    if (r.dtype == DType::i8 && recipe.group_size > 0 && q.group_size != recipe.group_size) ++ungrouped;
    r.crc = crc32c(q.data.data(), q.data.size());
    r.data_offset = at;
    file.write_at(at, q.data.data(), q.data.size());
    end = at + q.data.size();
    at = align64(end);
    if (!q.scales.empty()) {
      const size_t n = q.scales.size() * sizeof(float);
      r.crc = crc32c_update(r.crc, q.scales.data(), n);
      r.scales_offset = at;
      file.write_at(at, q.scales.data(), n);
      end = at + n;
      at = align64(end);
    }
    detail::tally(classes, spec, r.dtype, q.data.size() + q.scales.size() * sizeof(float), true);
  });
  const std::vector<uint8_t> header = metadata(ck, recipe, out.format_version, records);
  if (header.size() != header_size) throw InputError("internal: the .moe metadata changed size while streaming");
  file.write_at(0, header.data(), header.size());

  // Verified as the engine will load it, before it replaces anything: the structure,
  // every range and int8 scale through ModelFile::open (which touches only the metadata
  // and the scales), then each tensor's checksum over bytes read back in pieces.
  MappedFile map;
  if (Error e = MappedFile::open(file.temp_path().c_str(), map))
    throw InputError(std::string("cannot read back the converted model: ") + e.what());
  ModelFile model;
  OpenOptions no_crc;
  no_crc.verify_checksums = false;
  if (Error e = ModelFile::open(map.data(), map.size(), model, no_crc))
    throw InputError(std::string("the converted model would not load, so nothing was written: ") + e.what());
  for (int i = 0; i < static_cast<int>(records.size()); ++i) {
    const TensorBytes b = model.bytes(i);
    uint32_t crc = 0;
    for (uint64_t done = 0; done < b.bytes;) {
      const uint64_t n = std::min<uint64_t>(b.bytes - done, uint64_t{64} << 20);
      crc = crc32c_update(crc, b.data + done, static_cast<size_t>(n));
      release_pages(b.data + done, static_cast<size_t>(n));
      done += n;
    }
    if (b.scale_count > 0) crc = crc32c_update(crc, b.scales, static_cast<size_t>(b.scale_count) * sizeof(float));
    if (crc != records[static_cast<size_t>(i)].crc)
      throw InputError("the converted model reads back differently from what was written (tensor '" +
                       records[static_cast<size_t>(i)].name +
                       "'): the disk or file system lost data; nothing was "
                       "replaced");
  }
  file.commit();
  out.file_bytes = end;
  detail::finish_conversion(out, classes, ungrouped, recipe, ck.config);
  return out;
}

}  // namespace

Conversion convert_to_file(const std::filesystem::path& dir, const ConvertOptions& options,
                           const std::filesystem::path& output) {
  const Checkpoint ck = open_checkpoint(dir, options.max_context, options.capacity_factor);
  const ConversionBudget budget = conversion_budget(ck.config, options.recipe);
  const bool streaming = budget.file_bytes >= options.stream_from_bytes;
  check_conversion_budget(ck.config, options.recipe, 0, streaming);
  check_disk_space(output, budget.file_bytes, ck.config);
  if (streaming) return stream(ck, options, output);
  Conversion c = detail::convert_in_memory(ck, options);
  write_file_atomically(output, c.bytes.data(), c.bytes.size());
  return c;
}

}  // namespace moe::converter
