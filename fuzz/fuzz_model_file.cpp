// Fuzz target: a .moe file as untrusted input. Verification (checksums on, as every load
// does), then — with checksums off, so that mutated weights and dimensions get past the
// CRC and reach the engine — model view construction, a prompt through the file's
// tokenizer (char or BPE), prefill, and a few sampled decode steps on the configs compiled in here
// (those of the seed corpus, fuzz/make_seeds.sh).
// Invariants: nothing crashes or reads out of bounds (ASan/UBSan); a prefill or decode
// that succeeds leaves only finite logits (a non-finite one is its non_finite error); a
// sampled token id is always inside the vocabulary.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "moe/engine.hpp"
#include "moe/generate.hpp"
#include "moe/sampler.hpp"
#include "moe/text/stream_decoder.hpp"

namespace {

constexpr moe::ModelConfig kLlama = moe::config_from_key("llama-d8-l2-h2-kv1-hd4-e3-k2-f16-v16-c8");
constexpr moe::ModelConfig kClassic = moe::config_from_key("classic-d8-l2-h2-kv2-hd4-e3-k2-f16-v16-c8");

template <moe::ModelConfig Cfg>
void run_engine(const moe::ModelFile& file, const uint8_t* data, size_t size) {
  static moe::Engine<Cfg> engine;  // static: as on a device, and ASan then sees its bounds as one object
  if (engine.load(file)) return;
  int32_t prompt[4] = {0, 1, 2, 3};
  int n = 4;
  const moe::CharTokenizer& tok = file.tokenizer();
  if (tok.present()) {
    const char text[] = "ab";
    if (tok.encode(text, 2, prompt, 4, n)) n = 0;
  }
  // A BPE tokenizer's tables passed the checks (mutated, CRC off): encode and decode stay in bounds.
  const moe::text::BpeTokenizer& bpe = file.bpe_tokenizer();
  if (bpe.present()) {
    static unsigned char scratch[1 << 20];
    const char text[] = "ab ba <s> \xc3\xa9" "e\xcc\x81 12";
    if (bpe.encode_scratch_bytes(sizeof text - 1) > sizeof scratch) return;
    if (bpe.encode(text, sizeof text - 1, true, prompt, 4, n, scratch, sizeof scratch)) n = 0;
    moe::text::StreamDecoder d(bpe, true, false);
    char out[1 << 12];
    for (int i = 0; i < n; ++i) {
      if (prompt[i] < 0 || prompt[i] >= bpe.size()) moe::fuzz::invariant_broken("BPE id outside the tokenizer");
      (void)d.put(prompt[i], out, sizeof out);
    }
    (void)d.finish(out, sizeof out);
  }
  if (n == 0) return;
  if (moe::Error e = engine.prefill(prompt, n)) {
    if (e.code == moe::ErrorCode::non_finite && engine.position() != 0)
      moe::fuzz::invariant_broken("a non_finite error left the sequence in place");
    return;
  }
  const auto logits_finite = [&] {
    for (int i = 0; i < Cfg.vocab_size; ++i)
      if (!(engine.logits()[i] - engine.logits()[i] == 0.f)) return false;
    return true;
  };
  if (!logits_finite()) moe::fuzz::invariant_broken("prefill succeeded with a non-finite logit");
  // Sampling knobs from the input's last bytes, so every filter path is reached.
  const uint8_t knob = size ? data[size - 1] : 0;
  moe::SamplingParams params;
  params.temperature = (knob & 3) == 0 ? 0.f : 0.5f + static_cast<float>(knob & 3);
  params.top_k = (knob >> 2) & 7;
  params.top_p = (knob & 0x20) ? 0.9f : 1.f;
  moe::Sampler<Cfg.vocab_size> sampler(params);
  (void)moe::generate(engine, sampler, 12, [&](int32_t id) {
    if (id < 0 || id >= Cfg.vocab_size) moe::fuzz::invariant_broken("sampled token outside the vocabulary");
    if (!logits_finite()) moe::fuzz::invariant_broken("decode succeeded with a non-finite logit");
    return true;
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const moe::fuzz::AlignedCopy buf(data, size);
  moe::ModelFile checked;
  (void)moe::ModelFile::open(buf.data(), buf.size(), checked);
  moe::ModelFile file;
  moe::OpenOptions no_crc;
  no_crc.verify_checksums = false;
  if (moe::ModelFile::open(buf.data(), buf.size(), file, no_crc)) return 0;
  if (file.config() == kLlama) run_engine<kLlama>(file, data, size);
  if (file.config() == kClassic) run_engine<kClassic>(file, data, size);
  return 0;
}
