// What each quantization recipe costs in accuracy and buys in size, on both fixtures:
// file bytes, mean |logit error| vs fp32, top-1 agreement, and (classic models) held-out
// loss on the last 10% of tiny Shakespeare. The basis for moe_convert's defaults.
//   ./build/release/bench/quant_accuracy [SHAKESPEARE_CHECKPOINT_DIR]
// With a directory (a `moe_train --preset makemoe` run), its model is measured too.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include "converter/converter.hpp"
#include "converter/safetensors.hpp"
#include "tools/eval.hpp"

namespace {

using namespace moe;

struct Recipe {
  const char* name;
  DType experts, attention, embeddings;
  int group;
  converter::Q4Rule q4_rule = converter::Q4Rule::least_squares;
};

constexpr auto kQ4_0 = converter::Q4Rule::llama_q4_0;  // llama.cpp's arithmetic on the same tensors

const Recipe kRecipes[] = {
    {"fp32", DType::f32, DType::f32, DType::f32, 0},
    {"experts f16", DType::f16, DType::f32, DType::f32, 0},
    {"experts i8/row", DType::i8, DType::f32, DType::f32, 0},
    {"experts i8/g128", DType::i8, DType::f32, DType::f32, 128},
    {"experts i8/g64", DType::i8, DType::f32, DType::f32, 64},
    {"experts i8/g32", DType::i8, DType::f32, DType::f32, 32},
    {"experts i8/g16", DType::i8, DType::f32, DType::f32, 16},
    {"default: i8/row + f16 attn/emb", DType::i8, DType::f16, DType::f16, 0},
    {"all i8/g32", DType::i8, DType::i8, DType::i8, 32},
    {"all i8/row", DType::i8, DType::i8, DType::i8, 0},
    {"experts int4", DType::q4, DType::f32, DType::f32, 0},
    {"experts int4, Q4_0 scale rule", DType::q4, DType::f32, DType::f32, 0, kQ4_0},
    {"int4 experts + f16 attn/emb", DType::q4, DType::f16, DType::f16, 0},
    {"int4 experts + i8/row attn/emb", DType::q4, DType::i8, DType::i8, 0},
    {"all int4", DType::q4, DType::q4, DType::q4, 0},
    {"all int4, Q4_0 scale rule", DType::q4, DType::q4, DType::q4, 0, kQ4_0},
};

// llama.cpp's Q4_0 exactly as it stores a matrix (blocks of 32 adjacent columns; scale =
// the value of largest magnitude / -8; q = min(15, (int)(w / scale + 8.5)); f16 scale),
// applied to every expert matrix of a copy of the checkpoint and dequantized back to
// f32 there. The copy converts to fp32, so its figures are Q4_0's weight error alone:
// llama.cpp also rounds activations to 8 bits, so its own error is a little larger.
std::filesystem::path llama_q4_0_copy(const std::string& dir, const std::filesystem::path& out) {
  std::filesystem::create_directories(out);
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() != ".safetensors" && e.path().extension() != ".bin")
      std::filesystem::copy_file(e.path(), out / e.path().filename(),
                                 std::filesystem::copy_options::overwrite_existing);
  const converter::TensorStore store(dir);
  std::vector<converter::SafetensorOut> tensors;
  for (const std::string& name : store.names()) {
    const auto& info = store.info(name);
    std::vector<float> v = store.read_f32(name);
    if (name.find("expert") != std::string::npos && info.shape.size() == 2 && info.shape[1] % 32 == 0)
      for (size_t b = 0; b < v.size(); b += 32) {
        float amax = 0.f, max = 0.f;
        for (size_t i = b; i < b + 32; ++i)
          if (amax < std::fabs(v[i])) amax = std::fabs(v[i]), max = v[i];
        const float d = max / -8.f, id = d != 0.f ? 1.f / d : 0.f, stored = half_to_float(float_to_half(d));
        for (size_t i = b; i < b + 32; ++i)
          v[i] = static_cast<float>(std::min(15, static_cast<int>(static_cast<int8_t>(v[i] * id + 8.5f))) - 8) * stored;
      }
    tensors.push_back(converter::f32_tensor(name, info.shape, v.data()));
  }
  converter::write_safetensors(out / "model.safetensors", tensors);
  return out;
}

struct Loaded {
  std::vector<uint8_t> bytes;
  std::unique_ptr<uint8_t[], void (*)(void*)> aligned{nullptr, std::free};
  ModelFile file;
  Loaded(const std::string& dir, const Recipe& r) {
    converter::ConvertOptions o;
    o.recipe = {r.experts, r.attention, r.embeddings, r.group, r.q4_rule};
    bytes = converter::convert_checkpoint(dir, o).bytes;
    aligned.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes.size() + 63) / 64 * 64)));
    std::copy(bytes.begin(), bytes.end(), aligned.get());
    if (ModelFile::open(aligned.get(), bytes.size(), file)) std::abort();
  }
};

template <ModelConfig C>
void sweep(const std::string& dir, int loss_windows) {
  std::printf("\n%s\n%-32s %10s %12s %8s %12s %9s\n", dir.c_str(), "recipe", "bytes", "mean|err|", "top-1", "held-out",
              "vs fp32");
  Loaded ref(dir, kRecipes[0]);
  auto fp32 = std::make_unique<Engine<C>>();
  if (fp32->load(ref.file)) std::abort();
  std::vector<std::vector<int32_t>> seqs;
  std::mt19937 rng(11);
  for (int s = 0; s < 40; ++s) {
    std::vector<int32_t> seq(static_cast<size_t>(std::min(C.max_context, 32)));
    for (auto& id : seq) id = static_cast<int32_t>(rng() % C.vocab_size);
    seqs.push_back(seq);
  }
  std::vector<int32_t> val;
  if (C.family == Family::classic) {
    std::ifstream in(std::string(MOE_SOURCE_DIR) + "/data/tinyshakespeare.txt", std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    val = tools::encode_lenient(ref.file.tokenizer(),
                                text.substr(static_cast<size_t>(0.9 * static_cast<double>(text.size()))));
  }
  double loss32 = 0;
  for (const Recipe& r : kRecipes) {
    Loaded q(dir, r);
    auto engine = std::make_unique<Engine<C>>();
    if (engine->load(q.file)) std::abort();
    const tools::Agreement a = tools::compare_logits(*engine, *fp32, seqs);
    std::printf("%-32s %10zu %12.5f %7.1f%%", r.name, q.bytes.size(), a.mean_abs_error, 100 * a.top1);
    if (!val.empty()) {
      const double loss = tools::held_out_loss(*engine, val, loss_windows);
      if (&r == kRecipes) loss32 = loss;
      std::printf(" %12.4f %+8.2f%%", loss, 100 * (loss / loss32 - 1));
    }
    std::printf("\n");
  }
  // llama.cpp's Q4_0 on the experts, in f32 (llama_q4_0_copy).
  const std::filesystem::path copy = std::filesystem::temp_directory_path() / "moe_quant_accuracy_q4_0";
  Loaded q(llama_q4_0_copy(dir, copy).string(), kRecipes[0]);
  auto engine = std::make_unique<Engine<C>>();
  if (engine->load(q.file)) std::abort();
  const tools::Agreement a = tools::compare_logits(*engine, *fp32, seqs);
  std::printf("%-32s %10s %12.5f %7.1f%%", "experts llama.cpp Q4_0 (f32 math)", "-", a.mean_abs_error, 100 * a.top1);
  if (!val.empty()) {
    const double loss = tools::held_out_loss(*engine, val, loss_windows);
    std::printf(" %12.4f %+8.2f%%", loss, 100 * (loss / loss32 - 1));
  }
  std::printf("\n");
  std::filesystem::remove_all(copy);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string fixtures = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";
  sweep<config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128")>(fixtures + "mixtral-tiny-a", 0);
  sweep<config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16")>(fixtures + "makemoe-tiny", 2000);
  if (argc > 1) sweep<config_from_key("classic-d128-l8-h8-kv8-hd16-e8-k2-f512-v65-c32")>(argv[1], 500);
}
