// Embedding moe-edge in a program of your own: map a .moe file, verify it, bind an
// engine compiled for its config, feed a prompt and generate greedily.
//   embed model.moe ID [ID ...] [-n N]   prints the N (default 10) generated token ids
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "moe/engine.hpp"
#include "moe/generate.hpp"
#include "moe/model_file.hpp"
#include "moe/sampler.hpp"
#include "platform/mapped_file.hpp"

namespace {
constexpr moe::ModelConfig kConfig = moe::config_from_key(MOE_EMBED_CONFIG);
// Every buffer the engine needs is a member: static storage, no allocation at run time.
moe::Engine<kConfig> engine;

int fail(const moe::Error& e) {
  std::fprintf(stderr, "embed: %s\n", e.what());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: embed model.moe ID [ID ...] [-n N]\n");
    return 2;
  }
  std::vector<int32_t> prompt;
  int n_new = 10;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "-n") == 0 && i + 1 < argc) n_new = std::atoi(argv[++i]);
    else prompt.push_back(static_cast<int32_t>(std::atoi(argv[i])));
  }

  moe::MappedFile mapped;
  if (moe::Error e = moe::MappedFile::open(argv[1], mapped)) return fail(e);
  moe::ModelFile file;
  if (moe::Error e = moe::ModelFile::open(mapped.data(), mapped.size(), file)) return fail(e);
  if (moe::Error e = engine.load(file)) return fail(e);  // names both configs when they differ
  if (moe::Error e = engine.prefill(prompt.data(), static_cast<int>(prompt.size()))) return fail(e);

  moe::SamplingParams greedy;
  greedy.temperature = 0.f;
  moe::Sampler<kConfig.vocab_size> sampler(greedy);
  const char* sep = "";
  const moe::Error e = moe::generate(engine, sampler, n_new, [&](int32_t id) {
    std::printf("%s%d", sep, static_cast<int>(id));
    sep = " ";
    return true;
  });
  std::printf("\n");
  return e ? fail(e) : 0;
}
