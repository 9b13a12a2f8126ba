#include "trainer/checkpoint_io.hpp"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "converter/atomic_file.hpp"
#include "converter/checkpoint.hpp"
#include "converter/checkpoint_writer.hpp"
#include "converter/input_error.hpp"
#include "converter/input_file.hpp"
#include "converter/safetensors.hpp"
#include "moe/crc32c.hpp"
#include "trainer/data.hpp"

namespace moe::train {

using nlohmann::json;

namespace {
// makeMoE's noisy-top-k Linear: training-only, so the .moe layout has no role for it.
std::string noise_tensor_name(const TensorSpec& spec) {
  return "blocks." + std::to_string(spec.layer) + ".smoe.router.noise_linear." + (spec.is_matrix() ? "weight" : "bias");
}

constexpr char kMagic[8] = {'M', 'O', 'E', 'T', 'R', 'A', 'I', 'N'};
constexpr uint32_t kStateVersion = 1;

}  // namespace

void save_train_state(const std::filesystem::path& path, const TrainState& s) {
  const std::string meta = json{
      {"config", s.config.to_json()},
      {"vocab", converter::chars_utf8(s.vocab)},
      {"step", s.step},
      {"params",
       s.params.size()}}.dump();
  std::string header(kMagic, sizeof kMagic);
  auto put32 = [&](uint32_t v) { header.append(reinterpret_cast<const char*>(&v), 4); };
  put32(kStateVersion);
  put32(static_cast<uint32_t>(meta.size()));
  header += meta;
  uint32_t crc = crc32c(header.data(), header.size());
  for (const auto* buf : {&s.params, &s.m, &s.v}) crc = crc32c_update(crc, buf->data(), buf->size() * sizeof(float));
  converter::AtomicFile f(path);
  f.write(header.data(), header.size());
  for (const auto* buf : {&s.params, &s.m, &s.v}) f.write(buf->data(), buf->size() * sizeof(float));
  f.write(&crc, sizeof crc);
  f.commit();
}

TrainState load_train_state(const std::filesystem::path& path) {
  // Not recorded as an input: the run replaces it at its next checkpoint.
  const std::string bytes = converter::read_regular_file(path, size_t{1} << 36, "training state");
  const std::string where = "training state '" + path.string() + "'";
  if (bytes.size() < 20 || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    throw InputError(where + " is not a moe_train state file");
  uint32_t version, meta_len;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&meta_len, bytes.data() + 12, 4);
  if (version != kStateVersion)
    throw InputError(where + " has version " + std::to_string(version) + ", this moe_train reads " +
                     std::to_string(kStateVersion));
  if (16ull + meta_len > bytes.size()) throw InputError(where + " is truncated");
  json meta;
  try {
    meta = json::parse(bytes.begin() + 16, bytes.begin() + 16 + meta_len);
  } catch (const json::exception& e) {
    throw InputError(where + " is corrupt: " + e.what());
  }
  TrainState s;
  s.config = TrainConfig::from_json(meta.at("config"));
  s.vocab = converter::chars_from_utf8(meta.at("vocab").get<std::string>(), "training state: vocabulary");
  s.step = meta.at("step").get<int>();
  const size_t n = meta.at("params").get<size_t>();
  const size_t need = 16 + meta_len + 3 * n * sizeof(float) + 4;
  if (bytes.size() != need)
    throw InputError(where + " is truncated or padded: " + std::to_string(bytes.size()) + " bytes, expected " +
                     std::to_string(need));
  uint32_t stored;
  std::memcpy(&stored, bytes.data() + need - 4, 4);
  if (crc32c(bytes.data(), need - 4) != stored) throw InputError(where + " fails its checksum: the file is corrupt");
  const char* p = bytes.data() + 16 + meta_len;
  for (auto* buf : {&s.params, &s.m, &s.v}) {
    buf->resize(n);
    std::memcpy(buf->data(), p, n * sizeof(float));
    p += n * sizeof(float);
  }
  if (static_cast<long>(n) != parameter_count(parameter_table(s.config)))
    throw InputError(where + " holds " + std::to_string(n) + " parameters, its config needs " +
                     std::to_string(parameter_count(parameter_table(s.config))));
  return s;
}

void export_model(const std::filesystem::path& dir, const TrainConfig& c, const std::vector<uint32_t>& vocab,
                  const std::vector<ParamInfo>& table, const std::vector<float>& params) {
  const ModelConfig& m = c.model;
  std::vector<converter::SafetensorOut> tensors;
  for (const ParamInfo& p : table) {
    const float* data = params.data() + p.offset;
    if (!p.noise) {
      converter::append_checkpoint_tensor(m, p.spec, data, tensors);
    } else if (m.family == Family::classic) {  // the Mixtral layout has no place for it: training-only
      tensors.push_back(converter::f32_tensor(
          noise_tensor_name(p.spec),
          p.spec.is_matrix() ? std::vector<int64_t>{p.spec.rows, p.spec.cols} : std::vector<int64_t>{p.spec.rows},
          data));
    }
  }
  const converter::RecipeRecord recipe{c.dropout, c.aux_coef};
  converter::write_checkpoint(dir, m, c.constants, std::move(tensors), vocab,
                              json{{"moe_train", {{"version", MOE_VERSION}, {"training", c.to_json()}}}}, recipe);
}

TrainConfig inference_config(const converter::Checkpoint& ck) {
  TrainConfig tc;
  tc.model = ck.config;
  tc.constants = ck.constants;
  tc.router_noise = false;
  tc.dropout = 0;
  return tc;
}

template <class T>
std::vector<uint32_t> import_model(const std::filesystem::path& dir, Model<T>& model) {
  const converter::Checkpoint ck = converter::open_checkpoint(dir, 0, -1.);
  if (!(ck.config == model.config().model))
    throw InputError("checkpoint '" + dir.string() + "' has config " + ConfigKey(ck.config).c_str() +
                     ", the model is " + ConfigKey(model.config().model).c_str());
  for (const ParamInfo& p : model.table()) {
    std::vector<float> v;
    if (p.noise) {
      const std::string name = noise_tensor_name(p.spec);
      if (!ck.store->has(name)) continue;
      v = ck.store->read_f32(name);
      if (static_cast<long>(v.size()) != p.size) throw InputError("tensor '" + name + "' has the wrong size");
    } else {
      v = ck.load(p.spec);
    }
    for (long i = 0; i < p.size; ++i)
      model.params[static_cast<size_t>(p.offset + i)] = static_cast<T>(v[static_cast<size_t>(i)]);
  }
  return ck.chars;
}

template std::vector<uint32_t> import_model<float>(const std::filesystem::path&, Model<float>&);
template std::vector<uint32_t> import_model<double>(const std::filesystem::path&, Model<double>&);

}  // namespace moe::train
