// What each quantization recipe costs in accuracy and buys in size, on both fixtures:
// file bytes, mean |logit error| vs fp32, top-1 agreement, and (classic models) held-out
// loss on the last 10% of tiny Shakespeare. The basis for moe_convert's defaults.
//   ./build/release/bench/quant_accuracy [SHAKESPEARE_CHECKPOINT_DIR]
// With a directory (a `moe_train --preset makemoe` run), its model is measured too.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>

#include "converter/converter.hpp"
#include "converter/quantize.hpp"
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
    {"int4 experts + int4 attn, i8/row emb", DType::q4, DType::q4, DType::i8, 0},
    {"all int4", DType::q4, DType::q4, DType::q4, 0},
    {"all int4, Q4_0 scale rule", DType::q4, DType::q4, DType::q4, 0, kQ4_0},
};

// llama.cpp's 4-bit formats reimplemented from their arithmetic, each applied to every
// expert matrix of a copy of the checkpoint as llama.cpp stores a matrix (blocks of
// adjacent columns) and dequantized back to f32 there. The copy converts to fp32, so
// the figures are the format's weight error alone: llama.cpp also rounds activations to
// 8 bits, so its own error is a little larger. A rule quantizes n values in place.
using BlockRule = void (*)(float* v, int n);

// Q4_0 (18 bytes per 32): the converter's copy of llama.cpp's rule (Q4Rule::llama_q4_0).
void q4_0_block(float* v, int n) {
  for (int b = 0; b < n; b += kQ4Block) {
    const converter::Q4Block q = converter::quantize_block_q4(v + b, converter::Q4Rule::llama_q4_0);
    const float scale = half_to_float(q.scale);
    for (int i = 0; i < kQ4Block; ++i) v[b + i] = static_cast<float>(q.nibbles[i] - 8) * scale;
  }
}

// Q4_1 (20 bytes per 32): w = q * d + min, d = (max - min) / 15, q = min(15, (int)((w - min) / d + 0.5));
// f16 d and min.
void q4_1_block(float* v, int n) {
  float lo = v[0], hi = v[0];
  for (int i = 1; i < n; ++i) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
  const float d = (hi - lo) / 15.f, id = d != 0.f ? 1.f / d : 0.f;
  const float sd = half_to_float(float_to_half(d)), sm = half_to_float(float_to_half(lo));
  for (int i = 0; i < n; ++i)
    v[i] = static_cast<float>(std::min(15, static_cast<int>(static_cast<int8_t>((v[i] - lo) * id + 0.5f)))) * sd + sm;
}

// Q4_K's fit of one sub-block of 32 (x ~ scale * q - min, q in 0..15, min >= 0): from
// the range rule, try 21 stretched grids and keep the weighted least-squares (scale,
// min) of the best one. Returns the scale; *min gets the min.
float q4_k_fit(const float* x, const float* w, float* min) {
  float lo = x[0], hi = x[0], sum_w = 0.f, sum_x = 0.f;
  for (int i = 0; i < 32; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]), sum_w += w[i], sum_x += w[i] * x[i];
  lo = std::min(lo, 0.f);
  if (hi == lo) return *min = -lo, 0.f;
  const auto grid = [&](float iscale, int* q) {
    for (int i = 0; i < 32; ++i) q[i] = std::clamp(static_cast<int>(std::nearbyint(iscale * (x[i] - lo))), 0, 15);
  };
  const auto error = [&](float scale, float offset, const int* q) {
    float e = 0.f;
    for (int i = 0; i < 32; ++i)
      e += w[i] * (scale * static_cast<float>(q[i]) + offset - x[i]) *
           (scale * static_cast<float>(q[i]) + offset - x[i]);
    return e;
  };
  int q[32];
  float scale = (hi - lo) / 15.f;
  grid(15.f / (hi - lo), q);
  float best = error(scale, lo, q);
  for (int step = 0; step <= 20; ++step) {
    grid((-1.f + 0.1f * static_cast<float>(step) + 15.f) / (hi - lo), q);
    float sum_l = 0.f, sum_l2 = 0.f, sum_xl = 0.f;
    for (int i = 0; i < 32; ++i) {
      const float l = static_cast<float>(q[i]);
      sum_l += w[i] * l, sum_l2 += w[i] * l * l, sum_xl += w[i] * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det <= 0.f) continue;
    float s = (sum_w * sum_xl - sum_x * sum_l) / det, m = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (m > 0.f) m = 0.f, s = sum_xl / sum_l2;
    const float e = error(s, m, q);
    if (e < best) best = e, scale = s, lo = m;
  }
  *min = -lo;
  return scale;
}

// Q4_K (144 bytes per 256): sub-blocks of 32 with 6-bit scales and mins under the
// super-block's f16 d and dmin, each sub-block fitted by q4_k_fit with weights
// rms(x) + |x|. Rows shorter than 256 (the trained model's 128 columns) are one
// super-block here; llama.cpp would pick another format for them.
void q4_k_block(float* v, int n) {
  const int subs = n / 32;
  float scales[8], mins[8], w[32], max_scale = 0.f, max_min = 0.f;
  for (int j = 0; j < subs; ++j) {
    const float* x = v + 32 * j;
    float sum_x2 = 0.f;
    for (int i = 0; i < 32; ++i) sum_x2 += x[i] * x[i];
    const float rms = std::sqrt(sum_x2 / 32.f);
    for (int i = 0; i < 32; ++i) w[i] = rms + std::fabs(x[i]);
    scales[j] = q4_k_fit(x, w, &mins[j]);
    max_scale = std::max(max_scale, scales[j]), max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0.f ? 63.f / max_scale : 0.f, inv_min = max_min > 0.f ? 63.f / max_min : 0.f;
  const float d = half_to_float(float_to_half(max_scale / 63.f)), dmin = half_to_float(float_to_half(max_min / 63.f));
  for (int j = 0; j < subs; ++j) {
    const float sd = d * static_cast<float>(std::min(63, static_cast<int>(std::nearbyint(inv_scale * scales[j]))));
    const float sm = dmin * static_cast<float>(std::min(63, static_cast<int>(std::nearbyint(inv_min * mins[j]))));
    for (int i = 32 * j; i < 32 * j + 32; ++i) {
      const int q = sd != 0.f ? std::clamp(static_cast<int>(std::nearbyint((v[i] + sm) / sd)), 0, 15) : 0;
      v[i] = sd * static_cast<float>(q) - sm;
    }
  }
}

struct LlamaFormat {
  const char* name;
  int block;  // columns per block (or super-block)
  BlockRule rule;
};
const LlamaFormat kLlamaFormats[] = {{"experts llama.cpp Q4_0 (f32 math)", 32, q4_0_block},
                                     {"experts llama.cpp Q4_1 (f32 math)", 32, q4_1_block},
                                     {"experts llama.cpp Q4_K (f32 math)", 256, q4_k_block}};

std::filesystem::path llama_copy(const std::string& dir, const LlamaFormat& f, const std::filesystem::path& out) {
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
    if (name.find("expert") != std::string::npos && info.shape.size() == 2 && info.shape[1] % 32 == 0) {
      const int block = static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(f.block), info.shape[1]));
      for (size_t b = 0; b < v.size(); b += static_cast<size_t>(block)) f.rule(v.data() + b, block);
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
  const std::vector<std::vector<float>> fp32_logits = tools::all_logits(*fp32, seqs);
  // One line: the agreement with fp32 and (with text) the held-out loss.
  double loss32 = 0;
  const auto report = [&](const char* name, const std::string& bytes, const ModelFile& file, bool is_fp32) {
    auto engine = std::make_unique<Engine<C>>();
    if (engine->load(file)) std::abort();
    const tools::Agreement a = tools::compare_logits(tools::all_logits(*engine, seqs), fp32_logits, C.vocab_size);
    std::printf("%-32s %10s %12.5f %7.1f%%", name, bytes.c_str(), a.mean_abs_error, 100 * a.top1);
    if (!val.empty()) {
      const double loss = tools::held_out_loss(*engine, val, loss_windows);
      if (is_fp32) loss32 = loss;
      std::printf(" %12.4f %+8.2f%%", loss, 100 * (loss / loss32 - 1));
    }
    std::printf("\n");
  };
  for (const Recipe& r : kRecipes) {
    Loaded q(dir, r);
    report(r.name, std::to_string(q.bytes.size()), q.file, &r == kRecipes);
  }
  // llama.cpp's 4-bit formats on the experts, in f32 (llama_copy).
  const std::filesystem::path copy = std::filesystem::temp_directory_path() / "moe_quant_accuracy_llama";
  for (const LlamaFormat& f : kLlamaFormats)
    report(f.name, "-", Loaded(llama_copy(dir, f, copy).string(), kRecipes[0]).file, false);
  std::filesystem::remove_all(copy);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string fixtures = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";
  sweep<config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128")>(fixtures + "mixtral-tiny-a", 0);
  sweep<config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16")>(fixtures + "makemoe-tiny", 2000);
  if (argc > 1) sweep<config_from_key("classic-d128-l8-h8-kv8-hd16-e8-k2-f512-v65-c32")>(argv[1], 500);
}
