// A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) as moe_convert stores
// it in a .moe file: byte-pair encoding, SentencePiece-style (Mistral, Llama-2) or
// byte-level (GPT-2, Qwen, OLMoE, Granite, Llama-3). Every component of tokenizer.json is
// either represented exactly or refused by name: a model never gets a tokenizer that
// splits text differently from the reference (@huggingface/tokenizers).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "moe_model_generated.h"

namespace moe::text {
class BpeTokenizer;
}

namespace moe::converter {

struct TextStepSpec {
  fb::TextStepKind kind = fb::TextStepKind_Nfc;
  std::string text, replacement;
  bool flag = false, use_regex = false;
  fb::PrependScheme prepend = fb::PrependScheme_Always;
};

// Every table of fb::Tokenizer (kind Bpe), as written.
struct BpeTokenizerTables {
  std::string pieces;                   // per token: the bytes the model matches
  std::vector<uint32_t> piece_offsets;  // n_tokens + 1
  std::string decoded;                  // per token: the bytes the decoder gives
  std::vector<uint32_t> decoded_offsets;
  std::vector<uint8_t> token_flags;
  std::vector<uint32_t> piece_table;
  std::vector<fb::MergeSlot> merges;
  std::vector<int32_t> byte_tokens;  // 256
  bool byte_level = false, fuse_unk = false, ignore_merges = false, cleanup = false;
  int32_t unk_id = -1, bos_id = -1, eos_id = -1;
  std::vector<fb::AddedToken> added;
  std::vector<TextStepSpec> normalizers, pre_tokenizers;
  int strip_spaces = 0;
  std::vector<int32_t> prefix_ids, suffix_ids;
  fb::ChatTemplate chat = fb::ChatTemplate_None;
  bool needs_unicode = false;
  std::vector<std::string> notes;  // what the user should know (a chat template not recognised, ...)

  int size() const { return static_cast<int>(piece_offsets.size()) - 1; }
};

// Does `dir` hold a Hugging Face tokenizer.json (a "model" in it), rather than a char one?
bool has_hf_tokenizer(const std::filesystem::path& dir);

// Reads dir/tokenizer.json and, when present, dir/tokenizer_config.json. `vocab_size`:
// the model's (token ids must lie below it). Throws InputError naming the file and the
// component it cannot represent, a malformed entry, or a merge naming an unknown token.
BpeTokenizerTables read_hf_tokenizer(const std::filesystem::path& dir, int vocab_size);

// The fb::Tokenizer table for it (with the Unicode data when its pipeline needs it).
flatbuffers::Offset<fb::Tokenizer> write_bpe_tokenizer(flatbuffers::FlatBufferBuilder& fbb,
                                                       const BpeTokenizerTables& t);

// One encode/decode view over a tokenizer built in memory (moe_tokenize --tokenizer,
// tests): the FlatBuffer holding just the Tokenizer table.
std::vector<uint8_t> bpe_tokenizer_buffer(const BpeTokenizerTables& t);

// A token as tokenizer.json spells it ("Ġworld" for a byte-level piece, "▁world",
// "<0x0A>", an added token's content): what Hugging Face's convert_ids_to_tokens shows.
std::string piece_text(const text::BpeTokenizer& t, int32_t id);

}  // namespace moe::converter
