// Verifies a BPE tokenizer's tables in a .moe file before any use: every offset, id and
// hash table in range, every probe sequence finite, every pipeline step known and its
// regex compilable. After it succeeds, encode and decode index the tables unchecked.
#pragma once

#include <cstdint>

#include "moe/crc32c.hpp"
#include "moe/error.hpp"
#include "moe/text/bpe_tokenizer.hpp"
#include "moe/text/regex.hpp"
#include "moe/text/unicode.hpp"
#include "moe_model_generated.h"

namespace moe::text {

namespace detail {

inline Error bad(const char* what) { return Error::make(ErrorCode::bad_tokenizer, "BPE tokenizer: %s", what); }

template <class T>
bool ascending(const flatbuffers::Vector<T>* v) {
  for (flatbuffers::uoffset_t i = 1; i < v->size(); ++i)
    if (!(v->Get(i - 1) < v->Get(i))) return false;
  return true;
}
inline bool offsets_ok(const flatbuffers::Vector<uint32_t>* offsets, size_t bytes) {
  if (offsets == nullptr || offsets->size() < 2 || offsets->Get(0) != 0 || offsets->Get(offsets->size() - 1) != bytes)
    return false;
  for (flatbuffers::uoffset_t i = 1; i < offsets->size(); ++i)
    if (offsets->Get(i) < offsets->Get(i - 1)) return false;
  return true;
}
inline bool power_of_two(size_t n) { return n >= 2 && n <= (size_t{1} << 30) && (n & (n - 1)) == 0; }

inline Error check_unicode(const fb::UnicodeData* u, UnicodeView& out) {
  if (u == nullptr) return bad("its pipeline needs Unicode data (NFC, \\p{..}, \\s) and the file has none");
  const auto* index = u->block_index();
  const auto* blocks = u->blocks();
  if (index == nullptr || blocks == nullptr || index->size() != kCodePoints / kBlockSize ||
      blocks->size() % kBlockSize != 0 || blocks->size() == 0)
    return bad("Unicode block tables have the wrong size");
  const uint32_t n_blocks = blocks->size() / kBlockSize;
  for (const uint16_t b : *index)
    if (b >= n_blocks) return bad("Unicode block index out of range");
  for (const uint8_t v : *blocks)
    if ((v & kCategoryBits) >= kCategoryCount) return bad("Unicode category out of range");
  const auto *dec = u->decomposed(), *dec_off = u->decomposition_offsets(), *dec_data = u->decompositions();
  if (dec == nullptr || dec_data == nullptr || dec_off == nullptr || dec_off->size() != dec->size() + 1 ||
      !ascending(dec) || !offsets_ok(dec_off, dec_data->size()))
    return bad("Unicode decomposition tables are inconsistent");
  for (flatbuffers::uoffset_t i = 0; i < dec->size(); ++i)
    if (dec_off->Get(i + 1) - dec_off->Get(i) > 8 || dec_off->Get(i + 1) == dec_off->Get(i))
      return bad("a Unicode decomposition is longer than 8 code points or empty");
  for (const uint32_t cp : *dec_data)
    if (cp >= kCodePoints) return bad("a Unicode decomposition holds a value beyond U+10FFFF");
  const auto* comb = u->combining();
  const auto* comb_class = u->combining_class();
  if (comb == nullptr || comb_class == nullptr || comb->size() != comb_class->size() || !ascending(comb))
    return bad("Unicode combining-class tables are inconsistent");
  const auto* pairs = u->compositions();
  const auto* composed = u->composed();
  if (pairs == nullptr || composed == nullptr || pairs->size() != composed->size() || !ascending(pairs))
    return bad("Unicode composition tables are inconsistent");
  for (const uint32_t cp : *composed)
    if (cp >= kCodePoints) return bad("a Unicode composite beyond U+10FFFF");
  out.block_index = index->data();
  out.blocks = blocks->data();
  out.decomposed = dec->data();
  out.decomposition_offsets = dec_off->data();
  out.decompositions = dec_data->data();
  out.n_decomposed = dec->size();
  out.combining = comb->data();
  out.combining_class = comb_class->data();
  out.n_combining = comb->size();
  out.compositions = pairs->data();
  out.composed = composed->data();
  out.n_compositions = pairs->size();
  return Error::none();
}

// Compiling a regex needs a Regex (about 11 KB): kept out of the caller's frame.
[[gnu::noinline]] inline Error check_regex(const flatbuffers::String* pattern, bool ecma_space) {
  Regex r;
  return r.compile(pattern->data(), pattern->size(), ecma_space);
}

}  // namespace detail

// The CRC-32C of Tokenizer.crc32c: over the bytes of the tables the encoder reads, in
// this order. The converter computes it with this function too, on the vectors it built.
template <class Bytes, class Offsets, class Slots, class Ids>
uint32_t bpe_tables_crc(const Bytes* pieces, const Offsets* piece_offsets, const Bytes* decoded,
                        const Offsets* decoded_offsets, const Bytes* token_flags, const Offsets* piece_table,
                        const Slots* merges, const Ids* byte_tokens) {
  uint32_t crc = 0;
  auto add = [&](const auto* v, size_t element_bytes) {
    if (v != nullptr) crc = crc32c_update(crc, v->Data(), v->size() * element_bytes);
  };
  add(pieces, 1);
  add(piece_offsets, 4);
  add(decoded, 1);
  add(decoded_offsets, 4);
  add(token_flags, 1);
  add(piece_table, 4);
  add(merges, sizeof(fb::MergeSlot));
  add(byte_tokens, 4);
  return crc;
}
inline uint32_t bpe_tables_crc(const fb::Tokenizer* t) {
  return bpe_tables_crc(t->pieces(), t->piece_offsets(), t->decoded(), t->decoded_offsets(), t->token_flags(),
                        t->piece_table(), t->merges(), t->byte_tokens());
}

// `verify_checksum`: compare the tables with their CRC-32C (about 1 ms per 10 MB).
inline Error check_bpe_tokenizer(const fb::Tokenizer* t, int vocab_size, BpeTokenizer& out,
                                 bool verify_checksum = true) {
  using detail::bad;
  const auto* offsets = t->piece_offsets();
  if (t->pieces() == nullptr || !detail::offsets_ok(offsets, t->pieces()->size()))
    return bad("piece offsets are inconsistent");
  const uint32_t n = offsets->size() - 1;
  if (n > static_cast<uint32_t>(vocab_size))
    return Error::make(ErrorCode::bad_tokenizer, "BPE tokenizer has %u tokens, the model's vocabulary only %d",
                       static_cast<unsigned>(n), vocab_size);
  if (t->decoded() == nullptr || t->decoded_offsets() == nullptr || t->decoded_offsets()->size() != n + 1 ||
      !detail::offsets_ok(t->decoded_offsets(), t->decoded()->size()))
    return bad("decoded offsets are inconsistent");
  if (t->token_flags() == nullptr || t->token_flags()->size() != n) return bad("token flags have the wrong size");
  const auto* table = t->piece_table();
  if (table == nullptr || !detail::power_of_two(table->size())) return bad("the piece table is not a power of two");
  bool empty = false;
  for (const uint32_t v : *table) {
    if (v > n) return bad("the piece table names a token beyond the vocabulary");
    if (v != 0 && offsets->Get(v) == offsets->Get(v - 1)) return bad("the piece table holds an empty piece");
    empty = empty || v == 0;
  }
  const auto* merges = t->merges();
  if (merges == nullptr || !detail::power_of_two(merges->size())) return bad("the merge table is not a power of two");
  for (const fb::MergeSlot* m : *merges) {
    if (m->left() == 0xffffffffu) continue;
    if (m->left() >= n || m->right() >= n || m->merged() >= n)
      return bad("a merge names a token beyond the vocabulary");
  }
  bool merge_empty = false;
  for (const fb::MergeSlot* m : *merges) merge_empty = merge_empty || m->left() == 0xffffffffu;
  if (!empty || !merge_empty) return bad("a hash table has no empty slot");
  if (t->byte_tokens() == nullptr || t->byte_tokens()->size() != 256) return bad("byte tokens are not 256");
  for (const int32_t id : *t->byte_tokens())
    if (id < -1 || id >= static_cast<int32_t>(n)) return bad("a byte token is beyond the vocabulary");
  if (t->unk_id() < -1 || t->unk_id() >= static_cast<int32_t>(n) || t->bos_id() < -1 ||
      t->bos_id() >= static_cast<int32_t>(n) || t->eos_id() < -1 || t->eos_id() >= static_cast<int32_t>(n))
    return bad("unk/bos/eos is beyond the vocabulary");
  for (const auto* ids : {t->prefix_ids(), t->suffix_ids()})
    if (ids != nullptr)
      for (const int32_t id : *ids)
        if (id < 0 || id >= static_cast<int32_t>(n)) return bad("a post-processor token is beyond the vocabulary");
  if (t->added_tokens() != nullptr)
    for (const fb::AddedToken* a : *t->added_tokens())
      if (a->id() >= n || offsets->Get(a->id() + 1) == offsets->Get(a->id()))
        return bad("an added token is empty or beyond the vocabulary");
  if (t->chat_template() > fb::ChatTemplate_MAX) return bad("unknown chat template");
  bool needs_unicode = false;
  if (t->normalizers() != nullptr)
    for (const fb::TextStep* s : *t->normalizers()) {
      switch (s->kind()) {
        case fb::TextStepKind_Nfc: needs_unicode = true; break;
        case fb::TextStepKind_Prepend:
          if (s->text() == nullptr) return bad("Prepend without text");
          break;
        case fb::TextStepKind_Replace:
          if (s->text() == nullptr || s->text()->size() == 0 || s->replacement() == nullptr)
            return bad("Replace without a pattern");
          break;
        default: return bad("unknown normalizer");
      }
    }
  if (t->pre_tokenizers() != nullptr && t->pre_tokenizers()->size() > BpeTokenizer::kMaxSteps)
    return bad("more than 8 pre-tokenizer steps");
  if (t->pre_tokenizers() != nullptr)
    for (const fb::TextStep* s : *t->pre_tokenizers()) {
      switch (s->kind()) {
        case fb::TextStepKind_SplitRegex:
          if (s->text() == nullptr) return bad("Split without a pattern");
          if (Error e = detail::check_regex(s->text(), false)) return e;
          needs_unicode = true;
          break;
        case fb::TextStepKind_SplitString:
          if (s->text() == nullptr || s->text()->size() == 0) return bad("Split without a pattern");
          break;
        case fb::TextStepKind_ByteLevel: needs_unicode = needs_unicode || s->use_regex(); break;
        case fb::TextStepKind_Metaspace:
          if (s->replacement() == nullptr || s->replacement()->size() == 0 || s->prepend() > fb::PrependScheme_MAX)
            return bad("Metaspace without a replacement");
          break;
        case fb::TextStepKind_Digits: break;
        default: return bad("unknown pre-tokenizer");
      }
    }
  if (const uint32_t crc = verify_checksum ? bpe_tables_crc(t) : t->crc32c(); crc != t->crc32c())
    return Error::make(ErrorCode::corrupt,
                       "BPE tokenizer tables fail their CRC-32C check (0x%08X, stored 0x%08X): the file is damaged",
                       static_cast<unsigned>(crc), static_cast<unsigned>(t->crc32c()));
  UnicodeView unicode{};
  if (needs_unicode || t->unicode() != nullptr)
    if (Error e = detail::check_unicode(t->unicode(), unicode)) return e;
  out = BpeTokenizer::view(t, unicode);
  return Error::none();
}

}  // namespace moe::text
