// What each quantization recipe costs in accuracy and buys in size, on both fixtures:
// file bytes, mean |logit error| vs fp32, top-1 agreement, and (classic models) held-out
// loss on the last 10% of tiny Shakespeare. The basis for moe_convert's defaults.
//   ./build/release/bench/quant_accuracy [SHAKESPEARE_CHECKPOINT_DIR]
// With a directory (a `moe_train --preset makemoe` run), its model is measured too.
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include "converter/converter.hpp"
#include "tools/eval.hpp"

namespace {

using namespace moe;

struct Recipe {
  const char* name;
  DType experts, attention, embeddings;
  int group;
};

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
};

struct Loaded {
  std::vector<uint8_t> bytes;
  std::unique_ptr<uint8_t[], void (*)(void*)> aligned{nullptr, std::free};
  ModelFile file;
  Loaded(const std::string& dir, const Recipe& r) {
    converter::ConvertOptions o;
    o.recipe = {r.experts, r.attention, r.embeddings, r.group};
    bytes = converter::convert_checkpoint(dir, o).bytes;
    aligned.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes.size() + 63) / 64 * 64)));
    std::copy(bytes.begin(), bytes.end(), aligned.get());
    if (ModelFile::open(aligned.get(), bytes.size(), file)) std::abort();
  }
};

template <ModelConfig C>
void sweep(const std::string& dir, int loss_windows) {
  std::printf("\n%s\n%-32s %10s %12s %8s %12s\n", dir.c_str(), "recipe", "bytes", "mean|err|", "top-1", "held-out");
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
  for (const Recipe& r : kRecipes) {
    Loaded q(dir, r);
    auto engine = std::make_unique<Engine<C>>();
    if (engine->load(q.file)) std::abort();
    const tools::Agreement a = tools::compare_logits(*engine, *fp32, seqs);
    std::printf("%-32s %10zu %12.5f %7.1f%%", r.name, q.bytes.size(), a.mean_abs_error, 100 * a.top1);
    if (!val.empty()) std::printf(" %12.4f", tools::held_out_loss(*engine, val, loss_windows));
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string fixtures = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";
  sweep<config_from_key("llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128")>(fixtures + "mixtral-tiny-a", 0);
  sweep<config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v65-c16")>(fixtures + "makemoe-tiny", 2000);
  if (argc > 1) sweep<config_from_key("classic-d128-l8-h8-kv8-hd16-e8-k2-f512-v65-c32")>(argv[1], 500);
}
