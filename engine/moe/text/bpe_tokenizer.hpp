// Byte-pair encoding as Hugging Face's tokenizer.json defines it (SentencePiece-style BPE:
// Mistral, Llama-2; byte-level BPE: GPT-2, Qwen, OLMoE, Granite, Llama-3), over the
// tables moe_convert wrote into the .moe file. Encoding follows the reference step by
// step: added tokens are cut out first (longest match), each piece between them is
// normalized, pre-tokenized into words, and each word merged by rank; then the
// post-processor's tokens go around the text. Nothing is allocated: the caller passes
// scratch memory of `encode_scratch_bytes(text length)`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "moe/error.hpp"
#include "moe/text/regex.hpp"
#include "moe/text/unicode.hpp"
#include "moe/text/utf8.hpp"
#include "moe_model_generated.h"

namespace moe::text {

constexpr uint8_t kTokenSpecial = 1, kTokenAdded = 2;

inline uint64_t fnv1a(const char* s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<uint8_t>(s[i])) * 0x100000001b3ull;
  return h;
}
// The slot where probing starts, in a table of 2^bits slots (the converter uses the same).
inline uint32_t piece_slot(const char* s, size_t n, int bits) {
  return static_cast<uint32_t>((fnv1a(s, n) * 0x9e3779b97f4a7c15ull) >> (64 - bits));
}
inline uint32_t merge_slot(uint32_t left, uint32_t right, int bits) {
  return static_cast<uint32_t>(((uint64_t{left} << 32 | right) * 0x9e3779b97f4a7c15ull) >> (64 - bits));
}

// A bounded byte buffer in the caller's scratch.
struct Bytes {
  char* p = nullptr;
  size_t n = 0, cap = 0;
  bool put(const char* s, size_t k) {
    if (k > cap - n) return false;
    if (k != 0) std::memcpy(p + n, s, k);
    n += k;
    return true;
  }
};

class BpeTokenizer {
 public:
  BpeTokenizer() = default;

  // Views over a verified fb::Tokenizer (ModelFile::open checks every table first).
  static BpeTokenizer view(const fb::Tokenizer* t, const UnicodeView& unicode) {
    BpeTokenizer b;
    b.t_ = t;
    b.u_ = unicode;
    b.n_tokens_ = static_cast<int>(t->piece_offsets()->size()) - 1;
    b.pieces_ = reinterpret_cast<const char*>(t->pieces()->data());
    b.piece_offsets_ = t->piece_offsets()->data();
    b.decoded_ = reinterpret_cast<const char*>(t->decoded()->data());
    b.decoded_offsets_ = t->decoded_offsets()->data();
    b.flags_ = t->token_flags()->data();
    b.piece_table_ = t->piece_table()->data();
    b.piece_bits_ = log2(t->piece_table()->size());
    b.merges_ = reinterpret_cast<const fb::MergeSlot*>(t->merges()->Data());
    b.merge_bits_ = log2(t->merges()->size());
    b.byte_tokens_ = t->byte_tokens()->data();
    if (t->added_tokens() != nullptr)
      for (const fb::AddedToken* a : *t->added_tokens()) {
        size_t n;
        const auto first = static_cast<uint8_t>(b.piece(static_cast<int32_t>(a->id()), n)[0]);
        b.added_first_[first >> 5] |= uint32_t{1} << (first & 31);
      }
    return b;
  }

  bool present() const { return t_ != nullptr; }
  int size() const { return n_tokens_; }
  int32_t bos_id() const { return t_->bos_id(); }
  int32_t eos_id() const { return t_->eos_id(); }
  fb::ChatTemplate chat_template() const { return t_->chat_template(); }
  bool is_special(int32_t id) const { return id >= 0 && id < n_tokens_ && (flags_[id] & kTokenSpecial) != 0; }
  bool is_added(int32_t id) const { return id >= 0 && id < n_tokens_ && (flags_[id] & kTokenAdded) != 0; }
  bool byte_level() const { return t_->byte_level(); }
  const UnicodeView& unicode() const { return u_; }

  // The token's bytes as the model matches them (UTF-8, or raw bytes for byte-level).
  const char* piece(int32_t id, size_t& n) const {
    if (id < 0 || id >= n_tokens_) return n = 0, "";
    n = piece_offsets_[id + 1] - piece_offsets_[id];
    return pieces_ + piece_offsets_[id];
  }
  // The token's bytes as the decoder turns them into text (may be part of a character).
  const char* decoded(int32_t id, size_t& n) const {
    if (id < 0 || id >= n_tokens_) return n = 0, "";
    n = decoded_offsets_[id + 1] - decoded_offsets_[id];
    return decoded_ + decoded_offsets_[id];
  }
  // The longest token text the decoder gives (sizes a streaming decoder's output).
  size_t max_decoded_bytes() const {
    size_t m = 0;
    for (int32_t id = 0; id < n_tokens_; ++id)
      m = decoded_offsets_[id + 1] - decoded_offsets_[id] > m ? decoded_offsets_[id + 1] - decoded_offsets_[id] : m;
    return m;
  }
  // The id of a piece given in the model's bytes, or -1.
  int32_t find_piece(const char* s, size_t n) const {
    const uint32_t mask = (uint32_t{1} << piece_bits_) - 1;
    for (uint32_t slot = piece_slot(s, n, piece_bits_);; slot = (slot + 1) & mask) {
      const uint32_t v = piece_table_[slot];
      if (v == 0) return -1;
      const int32_t id = static_cast<int32_t>(v - 1);
      size_t k;
      const char* p = piece(id, k);
      if (k == n && std::memcmp(p, s, n) == 0) return id;
    }
  }

  static constexpr int kMaxSteps = 8;  // pre-tokenizers (ModelFile::open checks it)

  // Scratch bytes `encode` needs for a text of n bytes: linear in n (a word may be the
  // whole text, as in SentencePiece-style models), about 50 bytes per byte of normalized
  // text, plus a fixed part (the compiled regexes, the word cache).
  size_t encode_scratch_bytes(size_t n) const { return Layout(*this, n).total; }

  // UTF-8 text -> ids (with the post-processor's tokens when add_special). Fails on
  // malformed UTF-8 (naming the byte offset), when `capacity` ids are not enough, or
  // when scratch is smaller than encode_scratch_bytes(n).
  Error encode(const char* text, size_t n, bool add_special, int32_t* ids, int capacity, int& n_ids, void* scratch,
               size_t scratch_bytes) const {
    n_ids = 0;
    if (const size_t bad = utf8_invalid_at(text, n); bad != n)
      return Error::make(ErrorCode::unknown_character, "the text is not valid UTF-8 at byte %lu",
                         static_cast<unsigned long>(bad));
    const Layout layout(*this, n);
    if (scratch_bytes < layout.total)
      return Error::make(ErrorCode::bad_token, "encode: %lu bytes of scratch, %lu needed",
                         static_cast<unsigned long>(scratch_bytes), static_cast<unsigned long>(layout.total));
    Work w(*this, layout, static_cast<unsigned char*>(scratch), ids, capacity);
    if (const auto* steps = t_->pre_tokenizers())
      for (flatbuffers::uoffset_t k = 0; k < steps->size(); ++k) {
        const fb::TextStep* step = steps->Get(k);
        if (step->kind() == fb::TextStepKind_SplitRegex)
          if (Error e = w.regex[k]->compile(step->text()->data(), step->text()->size(), false)) return e;
        if (step->kind() == fb::TextStepKind_ByteLevel && step->use_regex())
          if (Error e = w.regex[k]->compile(kGpt2Pattern, sizeof kGpt2Pattern - 1, true)) return e;
      }
    if (add_special && t_->prefix_ids() != nullptr)
      for (const int32_t id : *t_->prefix_ids()) w.emit(id);
    // Added tokens are cut out of the raw text first (those with normalized=false).
    size_t o = 0;
    bool strip_next = false;
    for (size_t s = 0; s < n; ++s) {
      if (!may_start_added(text[s])) continue;
      const fb::AddedToken* tok = nullptr;
      const size_t len = match_added(text, n, s, false, tok);
      if (len == 0) continue;
      size_t gap_end = s;
      if (tok->lstrip()) gap_end = trim_end(text, o, gap_end);
      if (strip_next) o = trim_start(text, o, gap_end);
      if (Error e = encode_section(w, text + o, gap_end - o, o == 0)) return e;
      w.emit(static_cast<int32_t>(tok->id()));
      s += len - 1;
      o = s + 1;
      strip_next = tok->rstrip();
    }
    if (strip_next) o = trim_start(text, o, n);
    if (Error e = encode_section(w, text + o, n - o, o == 0)) return e;
    if (add_special && t_->suffix_ids() != nullptr)
      for (const int32_t id : *t_->suffix_ids()) w.emit(id);
    if (w.overflow) return Error::make(ErrorCode::bad_token, "the text is longer than %d tokens", capacity);
    n_ids = w.n_ids;
    return Error::none();
  }

  bool cleanup_spaces() const { return t_->decode_cleanup(); }
  int strip_spaces() const { return t_->decode_strip_spaces(); }

 private:
  struct Symbol {
    int32_t id;  // -1: a character the vocabulary lacks
    int32_t prev, next;
    uint32_t at, len;
  };
  // Results of short words, remembered within one encode call (a pure function of the
  // word: exact). Direct-mapped.
  struct CacheEntry {
    uint8_t len, n_ids;
    char bytes[22];
    int32_t ids[10];
  };
  static constexpr size_t kCacheEntries = 2048;

  // Where each buffer lies in the caller's scratch, for a text of n bytes.
  struct Layout {
    size_t normalized = 0, word = 0;  // capacities in bytes
    bool nfc = false;                 // code points for NFC are needed
    size_t level[kMaxSteps] = {};     // a pre-tokenizer's rewritten piece
    size_t regex[kMaxSteps] = {};     // offsets (0: none)
    size_t norm_at[2] = {}, cps_at = 0, level_at[kMaxSteps] = {}, symbols_at = 0, heap_at = 0, cache_at = 0;
    size_t total = 0;
    Layout(const BpeTokenizer& t, size_t n) {
      size_t cap = n;
      if (const auto* steps = t.t_->normalizers())
        for (const fb::TextStep* s : *steps) {
          const size_t text = s->text() ? s->text()->size() : 0, rep = s->replacement() ? s->replacement()->size() : 0;
          if (s->kind() == fb::TextStepKind_Nfc) cap = 3 * cap;  // NFC's longest UTF-8 expansion (UAX #15)
          if (s->kind() == fb::TextStepKind_Prepend) cap += text;
          if (s->kind() == fb::TextStepKind_Replace && text != 0 && rep > text) cap = cap * ((rep + text - 1) / text);
          if (s->kind() == fb::TextStepKind_Nfc) nfc = true;
        }
      normalized = cap + 8;
      size_t at = 0;
      auto take = [&](size_t bytes) {
        at = (at + 63) & ~size_t{63};
        const size_t here = at;
        at += bytes;
        return here;
      };
      if (const auto* steps = t.t_->pre_tokenizers())
        for (flatbuffers::uoffset_t k = 0; k < steps->size() && k < kMaxSteps; ++k) {
          const fb::TextStep* s = steps->Get(k);
          const size_t rep = s->replacement() ? s->replacement()->size() : 0;
          if (s->kind() == fb::TextStepKind_ByteLevel) cap += 1;
          if (s->kind() == fb::TextStepKind_Metaspace) cap = cap * (rep > 1 ? rep : 1) + rep;
          if (s->kind() == fb::TextStepKind_ByteLevel || s->kind() == fb::TextStepKind_Metaspace) level[k] = cap + 8;
          if (s->kind() == fb::TextStepKind_SplitRegex || (s->kind() == fb::TextStepKind_ByteLevel && s->use_regex()))
            regex[k] = take(sizeof(Regex)) + 1;  // + 1: 0 means none
        }
      word = cap + 8;
      norm_at[0] = take(normalized);
      norm_at[1] = take(normalized);
      cps_at = take(nfc ? 2 * normalized * sizeof(uint32_t) : 0);
      for (int k = 0; k < kMaxSteps; ++k)
        if (level[k] != 0) level_at[k] = take(level[k]);
      symbols_at = take(word * sizeof(Symbol));
      heap_at = take(3 * word * sizeof(uint64_t));
      cache_at = take(kCacheEntries * sizeof(CacheEntry));
      total = at + 64;  // room to align the start
    }
  };

  struct Work {
    const BpeTokenizer& t;
    const Layout& layout;
    Bytes norm[2];
    uint32_t* cps;
    char* level[kMaxSteps] = {};
    Regex* regex[kMaxSteps] = {};
    Symbol* symbols;
    uint64_t* heap;
    CacheEntry* cache;
    int32_t* ids;
    int capacity, n_ids = 0;
    bool overflow = false, last_unk = false;
    Work(const BpeTokenizer& tok, const Layout& l, unsigned char* scratch, int32_t* out, int out_capacity)
        : t(tok), layout(l), ids(out), capacity(out_capacity) {
      unsigned char* base =
          reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(scratch) + 63) & ~uintptr_t{63});
      for (int i = 0; i < 2; ++i) norm[i] = Bytes{reinterpret_cast<char*>(base + l.norm_at[i]), 0, l.normalized};
      cps = reinterpret_cast<uint32_t*>(base + l.cps_at);
      for (int k = 0; k < kMaxSteps; ++k) {
        if (l.level[k] != 0) level[k] = reinterpret_cast<char*>(base + l.level_at[k]);
        if (l.regex[k] != 0) regex[k] = reinterpret_cast<Regex*>(base + l.regex[k] - 1);
      }
      symbols = reinterpret_cast<Symbol*>(base + l.symbols_at);
      heap = reinterpret_cast<uint64_t*>(base + l.heap_at);
      cache = reinterpret_cast<CacheEntry*>(base + l.cache_at);
      for (size_t i = 0; i < kCacheEntries; ++i) cache[i].len = 0;
    }
    void emit(int32_t id) {
      last_unk = false;
      if (n_ids == capacity) {
        overflow = true;
        return;
      }
      ids[n_ids++] = id;
    }
    void emit_unk() {
      if (t.t_->unk_id() < 0) return;
      if (t.t_->fuse_unk() && last_unk) return;
      emit(t.t_->unk_id());
      last_unk = true;
    }
  };

  const fb::Tokenizer* t_ = nullptr;
  UnicodeView u_{};
  int n_tokens_ = 0;
  const char* pieces_ = nullptr;
  const uint32_t* piece_offsets_ = nullptr;
  const char* decoded_ = nullptr;
  const uint32_t* decoded_offsets_ = nullptr;
  const uint8_t* flags_ = nullptr;
  const uint32_t* piece_table_ = nullptr;
  int piece_bits_ = 0;
  const fb::MergeSlot* merges_ = nullptr;
  int merge_bits_ = 0;
  const int32_t* byte_tokens_ = nullptr;
  uint32_t added_first_[8] = {};  // the first bytes of the added tokens, as a bit set

  static int log2(uint32_t n) {
    int b = 0;
    while ((uint32_t{1} << b) < n) ++b;
    return b;
  }
  bool may_start_added(char c) const {
    const auto b = static_cast<uint8_t>(c);
    return (added_first_[b >> 5] >> (b & 31) & 1) != 0;
  }

  // The longest added token at text[s..) (normalized or not, as asked), or 0.
  size_t match_added(const char* text, size_t n, size_t s, bool normalized, const fb::AddedToken*& found) const {
    const auto* added = t_->added_tokens();
    if (added == nullptr) return 0;
    size_t best = 0;
    for (const fb::AddedToken* a : *added) {
      if (a->normalized() != normalized) continue;
      size_t k;
      const char* p = piece(static_cast<int32_t>(a->id()), k);
      if (k > best && k <= n - s && p[0] == text[s] && std::memcmp(p, text + s, k) == 0) best = k, found = a;
    }
    return best;
  }
  // JavaScript's trimEnd / trimStart over text[from, to).
  static size_t trim_end(const char* text, size_t from, size_t to) {
    while (to > from) {
      size_t at = to - 1;
      while (at > from && (static_cast<uint8_t>(text[at]) & 0xc0) == 0x80) --at;
      uint32_t cp = 0;
      if (utf8_decode(text + at, to - at, cp) == 0 || !is_ecma_space(cp)) break;
      to = at;
    }
    return to;
  }
  static size_t trim_start(const char* text, size_t from, size_t to) {
    while (from < to) {
      uint32_t cp = 0;
      const int k = utf8_decode(text + from, to - from, cp);
      if (k == 0 || !is_ecma_space(cp)) break;
      from += static_cast<size_t>(k);
    }
    return from;
  }

  static Error overflow() { return Error::make(ErrorCode::bad_token, "encode: scratch too small (a bug)"); }

  // One piece of text between added tokens: normalize, cut out normalized added tokens,
  // pre-tokenize, merge.
  Error encode_section(Work& w, const char* s, size_t n, bool first) const {
    if (n == 0) return Error::none();
    int cur = 0;
    w.norm[0].n = 0;
    if (!w.norm[0].put(s, n)) return overflow();
    if (t_->normalizers())
      for (const fb::TextStep* step : *t_->normalizers()) {
        Bytes& out = w.norm[1 - cur];
        out.n = 0;
        if (!normalize(*step, w.norm[cur], out, w)) return overflow();
        cur = 1 - cur;
      }
    const Bytes& text = w.norm[cur];
    if (text.n == 0) return Error::none();
    // Added tokens with normalized=true are matched in the normalized text.
    size_t o = 0;
    bool strip_next = false;
    for (size_t at = 0; at < text.n; ++at) {
      if (!may_start_added(text.p[at])) continue;
      const fb::AddedToken* tok = nullptr;
      const size_t len = match_added(text.p, text.n, at, true, tok);
      if (len == 0) continue;
      size_t gap_end = at;
      if (tok->lstrip()) gap_end = trim_end(text.p, o, gap_end);
      if (strip_next) o = trim_start(text.p, o, gap_end);
      if (Error e = pre_tokenize(w, 0, text.p + o, gap_end - o, first)) return e;
      w.emit(static_cast<int32_t>(tok->id()));
      at += len - 1;
      o = at + 1;
      strip_next = tok->rstrip();
    }
    if (strip_next) o = trim_start(text.p, o, text.n);
    return pre_tokenize(w, 0, text.p + o, text.n - o, first);
  }

  bool normalize(const fb::TextStep& step, const Bytes& in, Bytes& out, Work& w) const {
    switch (step.kind()) {
      case fb::TextStepKind_Nfc: {
        if (u_.nfc_quick_yes(in.p, in.n)) return out.put(in.p, in.n);
        const long k = u_.nfc(in.p, in.n, out.p, out.cap, w.cps, 2 * w.layout.normalized);
        if (k < 0) return false;
        out.n = static_cast<size_t>(k);
        return true;
      }
      case fb::TextStepKind_Prepend:
        return in.n == 0 || (out.put(step.text()->data(), step.text()->size()) && out.put(in.p, in.n));
      case fb::TextStepKind_Replace: return replace_all(in.p, in.n, *step.text(), *step.replacement(), out);
      default: return out.put(in.p, in.n);
    }
  }
  static bool replace_all(const char* s, size_t n, const flatbuffers::String& from, const flatbuffers::String& to,
                          Bytes& out) {
    const size_t k = from.size();
    size_t o = 0;
    for (size_t at = 0; k != 0 && at + k <= n;) {
      if (std::memcmp(s + at, from.data(), k) == 0) {
        if (!out.put(s + o, at - o) || !out.put(to.data(), to.size())) return false;
        at += k;
        o = at;
      } else {
        ++at;
      }
    }
    return out.put(s + o, n - o);
  }

  // Pre-tokenizer step k on one piece s[0..n): each piece it makes goes on to step k + 1
  // at once (depth first, so no list of pieces is kept); after the last step, a word.
  Error pre_tokenize(Work& w, flatbuffers::uoffset_t k, const char* s, size_t n, bool first) const {
    if (n == 0) return Error::none();
    const auto* steps = t_->pre_tokenizers();
    if (steps == nullptr || k == steps->size()) return merge_word(w, s, n), Error::none();
    const fb::TextStep* step = steps->Get(k);
    switch (step->kind()) {
      case fb::TextStepKind_SplitRegex: return split_regex(w, k, s, n, first, !step->flag());
      case fb::TextStepKind_SplitString: {
        const size_t m = step->text()->size();
        size_t o = 0;
        for (size_t a = 0; a + m <= n;) {
          if (std::memcmp(s + a, step->text()->data(), m) != 0) {
            ++a;
            continue;
          }
          if (Error e = pre_tokenize(w, k + 1, s + o, a - o, first)) return e;
          if (Error e = pre_tokenize(w, k + 1, s + a, m, first)) return e;
          a += m;
          o = a;
        }
        return pre_tokenize(w, k + 1, s + o, n - o, first);
      }
      case fb::TextStepKind_Digits:
        for (size_t o = 0; o < n;) {
          const bool digit = s[o] >= '0' && s[o] <= '9';
          size_t e = o + 1;
          if (!(digit && step->flag()))
            while (e < n && (s[e] >= '0' && s[e] <= '9') == digit) ++e;
          if (Error err = pre_tokenize(w, k + 1, s + o, e - o, first)) return err;
          o = e;
        }
        return Error::none();
      case fb::TextStepKind_ByteLevel: {  // an optional space first; the byte alphabet is the vocabulary's
        Bytes dst{w.level[k], 0, w.layout.level[k]};
        if (step->flag() && s[0] != ' ' && !dst.put(" ", 1)) return overflow();
        if (!dst.put(s, n)) return overflow();
        if (step->use_regex()) return split_regex(w, k, dst.p, dst.n, first, false);
        return pre_tokenize(w, k + 1, dst.p, dst.n, first);
      }
      case fb::TextStepKind_Metaspace: {  // spaces become the replacement, which goes first unless already there
        const flatbuffers::String& rep = *step->replacement();
        Bytes dst{w.level[k], 0, w.layout.level[k]};
        const bool prepend =
            step->prepend() == fb::PrependScheme_Always || (step->prepend() == fb::PrependScheme_First && first);
        const bool starts = (n >= 1 && s[0] == ' ') || (n >= rep.size() && std::memcmp(s, rep.data(), rep.size()) == 0);
        if (prepend && !starts && !dst.put(rep.data(), rep.size())) return overflow();
        size_t o = 0;
        for (size_t a = 0; a < n; ++a)
          if (s[a] == ' ') {
            if (!dst.put(s + o, a - o) || !dst.put(rep.data(), rep.size())) return overflow();
            o = a + 1;
          }
        if (!dst.put(s + o, n - o)) return overflow();
        return pre_tokenize(w, k + 1, dst.p, dst.n, first);
      }
      default: return pre_tokenize(w, k + 1, s, n, first);
    }
  }

  // The matches of step k's regex, and (keep_gaps) the text between them, each a piece
  // (empty ones dropped, as the reference does).
  Error split_regex(Work& w, flatbuffers::uoffset_t k, const char* s, size_t n, bool first, bool keep_gaps) const {
    size_t o = 0, start = 0, end = 0;
    while (o < n && w.regex[k]->find(s, n, o, u_, start, end)) {
      if (keep_gaps)
        if (Error e = pre_tokenize(w, k + 1, s + o, start - o, first)) return e;
      if (Error e = pre_tokenize(w, k + 1, s + start, end - start, first)) return e;
      o = end;
    }
    if (w.regex[k]->exhausted())
      return Error::make(ErrorCode::bad_tokenizer, "the pre-tokenizer regex needs more than %ld steps at one position",
                         Regex::kMaxSteps);
    if (keep_gaps) return pre_tokenize(w, k + 1, s + o, n - o, first);
    return Error::none();
  }

  // The merge of (left, right): its rank and result, or false.
  bool find_merge(int32_t left, int32_t right, uint32_t& rank, int32_t& merged) const {
    if (left < 0 || right < 0) return false;
    const uint32_t mask = (uint32_t{1} << merge_bits_) - 1;
    for (uint32_t slot = merge_slot(static_cast<uint32_t>(left), static_cast<uint32_t>(right), merge_bits_);;
         slot = (slot + 1) & mask) {
      const fb::MergeSlot& m = merges_[slot];
      if (m.left() == 0xffffffffu) return false;
      if (m.left() == static_cast<uint32_t>(left) && m.right() == static_cast<uint32_t>(right)) {
        rank = m.rank();
        merged = static_cast<int32_t>(m.merged());
        return true;
      }
    }
  }

  // One word -> tokens: its symbols (bytes, or characters), merged by rank (lowest first,
  // then leftmost), as the reference's priority queue does.
  void merge_word(Work& w, const char* s, size_t n) const {
    if (n == 0) return;
    CacheEntry* entry = nullptr;
    if (n <= sizeof entry->bytes) {
      entry = &w.cache[fnv1a(s, n) & (kCacheEntries - 1)];
      if (entry->len == n && std::memcmp(entry->bytes, s, n) == 0) {
        for (int i = 0; i < entry->n_ids; ++i) w.emit(entry->ids[i]);
        return;
      }
    }
    const int first_id = w.n_ids;
    merge_word_uncached(w, s, n);
    // Remember it unless unknown characters were involved (fusing them depends on what came before).
    const int made = w.n_ids - first_id;
    if (entry != nullptr && !w.overflow && made <= 10 && !w.last_unk) {
      bool unk = false;
      for (int i = 0; i < made; ++i) unk = unk || w.ids[first_id + i] == t_->unk_id();
      if (!unk) {
        entry->len = static_cast<uint8_t>(n);
        entry->n_ids = static_cast<uint8_t>(made);
        std::memcpy(entry->bytes, s, n);
        for (int i = 0; i < made; ++i) entry->ids[i] = w.ids[first_id + i];
      }
    }
  }

  void merge_word_uncached(Work& w, const char* s, size_t n) const {
    if (t_->ignore_merges()) {
      const int32_t id = find_piece(s, n);
      if (id >= 0) return w.emit(id);
    }
    Symbol* sym = w.symbols;
    int count = 0;
    for (size_t at = 0; at < n;) {
      size_t len = 1;
      int32_t id;
      if (t_->byte_level()) {
        id = byte_tokens_[static_cast<uint8_t>(s[at])];
      } else {
        uint32_t cp;
        len = static_cast<size_t>(utf8_decode(s + at, n - at, cp));
        if (len == 0) len = 1;
        id = find_piece(s + at, len);
      }
      sym[count] = Symbol{id, count - 1, count + 1, static_cast<uint32_t>(at), static_cast<uint32_t>(len)};
      ++count;
      at += len;
    }
    sym[count - 1].next = -1;
    // a min-heap of (rank << 32 | position)
    uint64_t* heap = w.heap;
    size_t heap_n = 0;
    auto push = [&](uint64_t v) {
      size_t i = heap_n++;
      heap[i] = v;
      while (i > 0 && heap[(i - 1) / 2] > heap[i]) {
        const uint64_t t = heap[i];
        heap[i] = heap[(i - 1) / 2];
        heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
      }
    };
    auto pop = [&]() {
      const uint64_t top = heap[0];
      heap[0] = heap[--heap_n];
      for (size_t i = 0;;) {
        size_t c = 2 * i + 1;
        if (c >= heap_n) break;
        if (c + 1 < heap_n && heap[c + 1] < heap[c]) ++c;
        if (heap[i] <= heap[c]) break;
        const uint64_t t = heap[i];
        heap[i] = heap[c];
        heap[c] = t;
        i = c;
      }
      return top;
    };
    uint32_t rank;
    int32_t merged;
    for (int i = 0; i + 1 < count; ++i)
      if (find_merge(sym[i].id, sym[i + 1].id, rank, merged)) push(uint64_t{rank} << 32 | static_cast<uint32_t>(i));
    while (heap_n > 0) {
      const uint64_t top = pop();
      const int i = static_cast<int>(top & 0xffffffffu);
      const uint32_t top_rank = static_cast<uint32_t>(top >> 32);
      if (sym[i].len == 0 || sym[i].next < 0) continue;
      const int j = sym[i].next;
      if (!find_merge(sym[i].id, sym[j].id, rank, merged) || rank != top_rank) continue;  // a stale entry
      sym[i].id = merged;
      sym[i].len += sym[j].len;
      sym[j].len = 0;
      sym[i].next = sym[j].next;
      if (sym[i].next >= 0) sym[sym[i].next].prev = i;
      if (sym[i].prev >= 0 && find_merge(sym[sym[i].prev].id, sym[i].id, rank, merged))
        push(uint64_t{rank} << 32 | static_cast<uint32_t>(sym[i].prev));
      if (sym[i].next >= 0 && find_merge(sym[i].id, sym[sym[i].next].id, rank, merged))
        push(uint64_t{rank} << 32 | static_cast<uint32_t>(i));
    }
    for (int i = 0; i >= 0; i = sym[i].next) {
      if (sym[i].id >= 0) {
        w.emit(sym[i].id);
        continue;
      }
      // Not in the vocabulary: its bytes as <0xNN> tokens when every one exists, else unk.
      bool all = t_->byte_tokens() != nullptr && !t_->byte_level();
      for (uint32_t k = 0; all && k < sym[i].len; ++k) all = byte_tokens_[static_cast<uint8_t>(s[sym[i].at + k])] >= 0;
      if (all)
        for (uint32_t k = 0; k < sym[i].len; ++k) w.emit(byte_tokens_[static_cast<uint8_t>(s[sym[i].at + k])]);
      else w.emit_unk();
    }
  }
};

}  // namespace moe::text
