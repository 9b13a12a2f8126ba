// The engine on a microcontroller with no OS: the model sits in flash (model_blob.S),
// the engine and sampler in static RAM, nothing is allocated (the allocator traps), no
// exceptions or RTTI. Generates MOE_FIRMWARE_TOKENS tokens greedily after a fixed prompt
// and prints them through semihosting:
//   tokens: 1,58,46,...      (compared by ctest with the host engine's tokens)
//   text: ...

#include "moe/engine.hpp"
#include "moe/generate.hpp"
#include "moe/sampler.hpp"

extern "C" {
extern const unsigned char moe_model_data[];
extern const unsigned int moe_model_size;
void semihost_write(const char* text);
void semihost_exit(int code);
}

namespace {

constexpr moe::ModelConfig kConfig = moe::config_from_key(MOE_FIRMWARE_CONFIG);
constexpr int32_t kPrompt[] = {MOE_FIRMWARE_PROMPT};
constexpr int kTokens = MOE_FIRMWARE_TOKENS;

// All of the engine's RAM, in .bss. Its size is the `g_engine` line of the footprint report.
moe::Engine<kConfig> g_engine;
moe::Sampler<kConfig.vocab_size> g_sampler(moe::SamplingParams{0.f, 0, 1.f, 0});
moe::ModelFile g_file;
char g_line[16 * kTokens + 64];
char g_text[4 * kTokens + 16];

int fail(const moe::Error& e) {
  semihost_write("moe firmware: ");
  semihost_write(e.what());
  semihost_write("\n");
  return 1;
}

}  // namespace

int main() {
  moe::format(g_line, sizeof g_line, "moe firmware: config %s, engine RAM %lu bytes, model %u bytes in flash\n",
              moe::ConfigKey(kConfig).c_str(), static_cast<unsigned long>(sizeof g_engine), moe_model_size);
  semihost_write(g_line);
  if (moe::Error e = moe::ModelFile::open(moe_model_data, moe_model_size, g_file)) return fail(e);
  if (moe::Error e = g_engine.load(g_file)) return fail(e);
  if (moe::Error e = g_engine.prefill(kPrompt, static_cast<int>(sizeof kPrompt / sizeof kPrompt[0]))) return fail(e);

  int used = moe::format(g_line, sizeof g_line, "tokens: ");
  int text = 0;
  const moe::Error stop = moe::generate(g_engine, g_sampler, kTokens, [&](int32_t id) {
    used += moe::format(g_line + used, sizeof g_line - static_cast<size_t>(used), "%s%d", used > 8 ? "," : "",
                        static_cast<int>(id));
    char utf8[4];
    const int n = g_file.tokenizer().decode(id, utf8);
    for (int i = 0; i < n; ++i) g_text[text++] = utf8[i] == '\n' ? ' ' : utf8[i];
    return true;
  });
  if (stop) return fail(stop);
  semihost_write(g_line);
  semihost_write("\ntext: ");
  g_text[text] = '\0';
  semihost_write(g_text);
  semihost_write("\n");
  return 0;
}

// newlib's exit ends here: report the status to qemu.
extern "C" void _exit(int code) {
  semihost_exit(code);
  for (;;) {
  }
}
