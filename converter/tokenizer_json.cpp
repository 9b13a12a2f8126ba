#include "converter/tokenizer_json.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "converter/input_error.hpp"
#include "converter/input_file.hpp"
#include "converter/unicode/unicode_data.hpp"
#include "moe/text/bpe_check.hpp"
#include "moe/text/bpe_tokenizer.hpp"
#include "moe/text/regex.hpp"
#include "moe/text/utf8.hpp"

namespace moe::converter {
namespace {

using nlohmann::json;

// tokenizer.json's description of one thing we cannot represent, naming the file.
[[noreturn]] void refuse(const std::filesystem::path& file, const std::string& what) {
  throw InputError("'" + file.string() + "': " + what);
}

// Only these keys, or refuse naming the other one.
void known_keys(const json& j, std::initializer_list<const char*> keys, const std::filesystem::path& file,
                const std::string& what) {
  for (const auto& [k, v] : j.items()) {
    bool known = false;
    for (const char* key : keys) known = known || k == key;
    if (!known) refuse(file, what + " option '" + k + "' is not supported by moe_convert");
  }
}

std::string str_or(const json& j, const char* key, const std::string& fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string()) throw InputError(std::string("'") + key + "' is not a string");
  return j[key].get<std::string>();
}
bool bool_or(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) throw InputError(std::string("'") + key + "' is not true or false");
  return j[key].get<bool>();
}

// GPT-2's byte-to-unicode table: printable bytes stand for themselves, the others are
// moved to U+0100 and up, in order.
std::array<uint32_t, 256> byte_alphabet() {
  std::array<uint32_t, 256> map{};
  std::vector<bool> direct(256);
  for (int b = '!'; b <= '~'; ++b) direct[static_cast<size_t>(b)] = true;
  for (int b = 0xa1; b <= 0xac; ++b) direct[static_cast<size_t>(b)] = true;
  for (int b = 0xae; b <= 0xff; ++b) direct[static_cast<size_t>(b)] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b)
    map[static_cast<size_t>(b)] = direct[static_cast<size_t>(b)] ? static_cast<uint32_t>(b) : next++;
  return map;
}

// A vocabulary entry in the byte alphabet -> its bytes; false when a character is outside it.
bool alphabet_to_bytes(const std::string& s, const std::unordered_map<uint32_t, uint8_t>& inverse, std::string& out) {
  out.clear();
  for (size_t at = 0; at < s.size();) {
    uint32_t cp = 0;
    const int k = text::utf8_decode(s.data() + at, s.size() - at, cp);
    if (k == 0) return false;
    const auto it = inverse.find(cp);
    if (it == inverse.end()) return false;
    out += static_cast<char>(it->second);
    at += static_cast<size_t>(k);
  }
  return true;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t o = 0;
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, o)) {
    out.append(s, o, at - o);
    out += to;
    o = at + from.size();
  }
  out.append(s, o, std::string::npos);
  return out;
}

// A pattern {"String": s} (the only kind Replace steps may use here).
std::string string_pattern(const json& step, const std::filesystem::path& file, const std::string& what) {
  if (!step.contains("pattern") || !step["pattern"].is_object()) refuse(file, what + " has no pattern");
  const json& p = step["pattern"];
  if (p.contains("String") && p["String"].is_string()) return p["String"].get<std::string>();
  refuse(file, what + " with a " + (p.contains("Regex") ? "Regex" : "non-String") + " pattern is not supported");
}

TextStepSpec step_of(fb::TextStepKind kind) {
  TextStepSpec s;
  s.kind = kind;
  return s;
}

struct Reader {
  Reader(std::filesystem::path f, BpeTokenizerTables& tables) : file(std::move(f)), t(tables) {}
  std::filesystem::path file;
  BpeTokenizerTables& t;

  void normalizer(const json& n) {
    if (n.is_null()) return;
    const std::string type = str_or(n, "type", "");
    if (type == "Sequence") {
      known_keys(n, {"type", "normalizers"}, file, "normalizer Sequence");
      for (const json& s : n.at("normalizers")) normalizer(s);
    } else if (type == "NFC") {
      known_keys(n, {"type"}, file, "normalizer NFC");
      t.normalizers.push_back(step_of(fb::TextStepKind_Nfc));
      t.needs_unicode = true;
    } else if (type == "Prepend") {
      known_keys(n, {"type", "prepend"}, file, "normalizer Prepend");
      TextStepSpec s = step_of(fb::TextStepKind_Prepend);
      s.text = str_or(n, "prepend", "");
      t.normalizers.push_back(s);
    } else if (type == "Replace") {
      known_keys(n, {"type", "pattern", "content"}, file, "normalizer Replace");
      TextStepSpec s = step_of(fb::TextStepKind_Replace);
      s.text = string_pattern(n, file, "normalizer Replace");
      s.replacement = str_or(n, "content", "");
      if (s.text.empty()) refuse(file, "normalizer Replace with an empty pattern");
      t.normalizers.push_back(s);
    } else {
      refuse(file, "normalizer '" + type + "' is not supported by moe_convert (NFC, Prepend, Replace, Sequence are)");
    }
  }

  void pre_tokenizer(const json& p) {
    if (p.is_null()) return;
    const std::string type = str_or(p, "type", "");
    if (type == "Sequence") {
      known_keys(p, {"type", "pretokenizers"}, file, "pre_tokenizer Sequence");
      for (const json& s : p.at("pretokenizers")) pre_tokenizer(s);
    } else if (type == "Split") {
      known_keys(p, {"type", "pattern", "behavior", "invert"}, file, "pre_tokenizer Split");
      // Isolated: matches and the text between them are words; Removed with invert: the
      // matches alone (the reference and Hugging Face's Rust agree on both).
      const std::string behavior = str_or(p, "behavior", "");
      const bool invert = bool_or(p, "invert", false);
      if (!(behavior == "Isolated" && !invert) && !(behavior == "Removed" && invert))
        refuse(file, "pre_tokenizer Split with behavior '" + behavior + "' and invert " + (invert ? "true" : "false") +
                         " is not supported (Isolated, or Removed with invert: true, are)");
      TextStepSpec s;
      s.flag = invert;
      const json& pattern = p.at("pattern");
      if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
        s.kind = fb::TextStepKind_SplitRegex;
        s.text = pattern["Regex"].get<std::string>();
        text::Regex r;
        if (Error e = r.compile(s.text.data(), s.text.size(), false))
          refuse(file, "pre_tokenizer Split pattern " + json(s.text).dump() + ": " + e.what());
        t.needs_unicode = true;
      } else if (pattern.contains("String") && pattern["String"].is_string()) {
        s.kind = fb::TextStepKind_SplitString;
        s.text = pattern["String"].get<std::string>();
        if (s.text.empty()) refuse(file, "pre_tokenizer Split with an empty pattern");
      } else {
        refuse(file, "pre_tokenizer Split has no String or Regex pattern");
      }
      t.pre_tokenizers.push_back(s);
    } else if (type == "ByteLevel") {
      known_keys(p, {"type", "add_prefix_space", "trim_offsets", "use_regex"}, file, "pre_tokenizer ByteLevel");
      TextStepSpec s = step_of(fb::TextStepKind_ByteLevel);
      s.flag = bool_or(p, "add_prefix_space", false);
      s.use_regex = bool_or(p, "use_regex", true);
      t.needs_unicode = t.needs_unicode || s.use_regex;
      t.byte_level = true;
      t.pre_tokenizers.push_back(s);
    } else if (type == "Metaspace") {
      known_keys(p, {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"}, file,
                 "pre_tokenizer Metaspace");
      TextStepSpec s = step_of(fb::TextStepKind_Metaspace);
      s.replacement = str_or(p, "str_rep", str_or(p, "replacement", "\xe2\x96\x81"));
      if (s.replacement.empty()) refuse(file, "pre_tokenizer Metaspace with an empty replacement");
      const std::string scheme = str_or(p, "prepend_scheme", bool_or(p, "add_prefix_space", true) ? "always" : "never");
      if (scheme == "always") s.prepend = fb::PrependScheme_Always;
      else if (scheme == "first") s.prepend = fb::PrependScheme_First;
      else if (scheme == "never") s.prepend = fb::PrependScheme_Never;
      else refuse(file, "pre_tokenizer Metaspace prepend_scheme '" + scheme + "' is not known");
      // split is not applied: the reference keeps the text whole (SentencePiece pieces
      // never hold the replacement inside, so words split there merge the same).
      t.pre_tokenizers.push_back(s);
    } else if (type == "Digits") {
      known_keys(p, {"type", "individual_digits"}, file, "pre_tokenizer Digits");
      TextStepSpec s = step_of(fb::TextStepKind_Digits);
      s.flag = bool_or(p, "individual_digits", false);
      t.pre_tokenizers.push_back(s);
    } else {
      refuse(file, "pre_tokenizer '" + type +
                       "' is not supported by moe_convert (Split, ByteLevel, Metaspace, Digits, Sequence are)");
    }
  }

  // The decoder: per-token steps before Fuse are applied to each token here; after it,
  // only Strip of leading spaces remains (done by the engine at the start of the text).
  bool fused = false;
  struct TokenDecoding {
    std::vector<std::pair<std::string, std::string>> replaces;
    bool byte_fallback = false, byte_level = false, metaspace = false;
    std::string metaspace_replacement;
  } dec;
  void decoder(const json& d) {
    if (d.is_null()) return;
    const std::string type = str_or(d, "type", "");
    if (type == "Sequence") {
      known_keys(d, {"type", "decoders"}, file, "decoder Sequence");
      for (const json& s : d.at("decoders")) decoder(s);
      return;
    }
    if (fused && type != "Strip") refuse(file, "decoder '" + type + "' after Fuse is not supported");
    if (type == "Replace") {
      known_keys(d, {"type", "pattern", "content"}, file, "decoder Replace");
      dec.replaces.emplace_back(string_pattern(d, file, "decoder Replace"), str_or(d, "content", ""));
    } else if (type == "ByteFallback") {
      known_keys(d, {"type"}, file, "decoder ByteFallback");
      dec.byte_fallback = true;
    } else if (type == "Fuse") {
      known_keys(d, {"type"}, file, "decoder Fuse");
      fused = true;
    } else if (type == "Strip") {
      known_keys(d, {"type", "content", "start", "stop"}, file, "decoder Strip");
      if (str_or(d, "content", " ") != " " || d.value("stop", 0) != 0 || !fused)
        refuse(file, "decoder Strip other than of leading spaces after Fuse is not supported");
      t.strip_spaces = std::clamp(d.value("start", 0), 0, 255);
    } else if (type == "ByteLevel") {
      known_keys(d, {"type", "add_prefix_space", "trim_offsets", "use_regex"}, file, "decoder ByteLevel");
      dec.byte_level = true;
    } else if (type == "Metaspace") {
      known_keys(d, {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"}, file,
                 "decoder Metaspace");
      dec.metaspace = true;
      dec.metaspace_replacement = str_or(d, "replacement", "\xe2\x96\x81");
      const std::string scheme = str_or(d, "prepend_scheme", bool_or(d, "add_prefix_space", true) ? "always" : "never");
      if (scheme != "never") t.strip_spaces = 1;
    } else {
      refuse(file, "decoder '" + type + "' is not supported by moe_convert");
    }
  }

  // Post-processor tokens around the text: TemplateProcessing's single template.
  void post_processor(const json& p, const std::function<int32_t(const std::string&)>& id_of) {
    if (p.is_null()) return;
    const std::string type = str_or(p, "type", "");
    if (type == "Sequence") {
      known_keys(p, {"type", "processors"}, file, "post_processor Sequence");
      for (const json& s : p.at("processors")) post_processor(s, id_of);
    } else if (type == "ByteLevel") {
      // offsets only: the ids are unchanged
    } else if (type == "TemplateProcessing") {
      known_keys(p, {"type", "single", "pair", "special_tokens"}, file, "post_processor TemplateProcessing");
      bool after = false;
      for (const json& piece : p.at("single")) {
        if (piece.contains("Sequence")) {
          if (piece["Sequence"].value("id", "") != "A") refuse(file, "post_processor single template uses sequence B");
          after = true;
          continue;
        }
        if (!piece.contains("SpecialToken")) refuse(file, "post_processor template piece is not known");
        const std::string name = piece["SpecialToken"].value("id", "");
        std::vector<int32_t> ids;
        const json& specials = p.value("special_tokens", json::object());
        if (specials.contains(name) && specials[name].contains("ids")) {
          for (const json& id : specials[name]["ids"]) ids.push_back(id.get<int32_t>());
        } else {
          const int32_t id = id_of(name);
          if (id < 0) refuse(file, "post_processor names token '" + name + "', which is not in the vocabulary");
          ids.push_back(id);
        }
        for (const int32_t id : ids) (after ? t.suffix_ids : t.prefix_ids).push_back(id);
      }
    } else {
      refuse(file, "post_processor '" + type + "' is not supported by moe_convert (TemplateProcessing, ByteLevel are)");
    }
  }

  // A token's bytes as the decoder gives them.
  std::string decode_piece(const std::string& piece) const {
    // Byte-level: a vocabulary piece is already its bytes (the caller mapped it), and the
    // reference passes added tokens through as they are.
    if (dec.byte_level) return piece;
    std::string s = piece;
    for (const auto& [from, to] : dec.replaces) s = replace_all(s, from, to);
    if (dec.metaspace) s = replace_all(s, dec.metaspace_replacement, " ");
    if (dec.byte_fallback && s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>' &&
        std::isxdigit(static_cast<unsigned char>(s[3])) && std::isxdigit(static_cast<unsigned char>(s[4])))
      return std::string(1, static_cast<char>(std::stoi(s.substr(3, 2), nullptr, 16)));
    return s;
  }
};

int32_t token_id_of(const json& v, const std::unordered_map<std::string, int32_t>& ids) {
  std::string name;
  if (v.is_string()) name = v.get<std::string>();
  else if (v.is_object() && v.contains("content") && v["content"].is_string()) name = v["content"].get<std::string>();
  else return -1;
  const auto it = ids.find(name);
  return it == ids.end() ? -1 : it->second;
}

fb::ChatTemplate detect_chat(const std::string& tpl) {
  if (tpl.find("<|im_start|>") != std::string::npos) return fb::ChatTemplate_ChatML;
  if (tpl.find("<|start_of_role|>") != std::string::npos) return fb::ChatTemplate_Granite;
  if (tpl.find("[INST]") != std::string::npos) return fb::ChatTemplate_MistralInst;
  if (tpl.find("<|user|>") != std::string::npos && tpl.find("<|assistant|>") != std::string::npos)
    return fb::ChatTemplate_Tulu;
  return fb::ChatTemplate_None;
}

uint32_t table_size(size_t entries) {
  uint32_t n = 2;
  while (n < 2 * entries + 1) n *= 2;
  return n;
}

}  // namespace

bool has_hf_tokenizer(const std::filesystem::path& dir) {
  const auto path = dir / "tokenizer.json";
  if (!std::filesystem::exists(path)) return false;
  const json j = read_json_file(path);
  return j.is_object() && j.contains("model");
}

BpeTokenizerTables read_hf_tokenizer(const std::filesystem::path& dir, int vocab_size) {
  const auto file = dir / "tokenizer.json";
  const json j = read_json_file(file);
  BpeTokenizerTables t;
  Reader r(file, t);
  try {
    if (!j.is_object() || !j.contains("model")) refuse(file, "is not a Hugging Face tokenizer (no \"model\")");
    known_keys(j,
               {"version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer", "post_processor",
                "decoder", "model"},
               file, "tokenizer.json");
    if (!j.value("truncation", json()).is_null() || !j.value("padding", json()).is_null())
      t.notes.push_back("tokenizer.json's truncation/padding settings are not applied (prompts are never cut)");
    const json& m = j["model"];
    const std::string type = str_or(m, "type", "BPE");
    if (type != "BPE") refuse(file, "model type '" + type + "' is not supported by moe_convert (BPE is)");
    known_keys(m,
               {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk",
                "byte_fallback", "ignore_merges", "vocab", "merges"},
               file, "model");
    if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.)
      refuse(file, "BPE dropout is not supported (it makes encoding random)");
    if (!str_or(m, "continuing_subword_prefix", "").empty() || !str_or(m, "end_of_word_suffix", "").empty())
      refuse(file, "BPE continuing_subword_prefix / end_of_word_suffix are not supported");
    t.fuse_unk = bool_or(m, "fuse_unk", false);
    t.ignore_merges = bool_or(m, "ignore_merges", false);
    const bool byte_fallback = bool_or(m, "byte_fallback", false);

    r.normalizer(j.value("normalizer", json()));
    r.pre_tokenizer(j.value("pre_tokenizer", json()));
    r.decoder(j.value("decoder", json()));
    if (r.dec.byte_level != t.byte_level)
      refuse(file, "the pre_tokenizer and the decoder disagree about ByteLevel; not supported");

    // vocabulary
    if (!m.contains("vocab") || !m["vocab"].is_object()) refuse(file, "model has no vocab object");
    std::unordered_map<std::string, int32_t> ids;
    int32_t max_id = -1;
    for (const auto& [piece, id] : m["vocab"].items()) {
      if (!id.is_number_integer() || id.get<long long>() < 0 || id.get<long long>() >= vocab_size)
        refuse(file, "vocab entry " + json(piece).dump() + " has id " + id.dump() + ", outside the model's " +
                         std::to_string(vocab_size) + " tokens");
      ids[piece] = id.get<int32_t>();
      max_id = std::max(max_id, id.get<int32_t>());
    }
    // added tokens
    struct Added {
      std::string content;
      fb::AddedToken token;
    };
    std::vector<Added> added;
    for (const json& a : j.value("added_tokens", json::array())) {
      known_keys(a, {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"}, file, "added token");
      const long long id = a.value("id", -1LL);
      if (id < 0 || id >= vocab_size)
        refuse(file, "added token " + a.value("content", std::string()) + " has id " + std::to_string(id) +
                         ", outside the model's " + std::to_string(vocab_size) + " tokens");
      const std::string content = a.value("content", std::string());
      if (content.empty()) refuse(file, "an added token is empty");
      if (text::utf8_invalid_at(content.data(), content.size()) != content.size())
        refuse(file, "added token " + std::to_string(id) + " is not UTF-8");
      if (bool_or(a, "single_word", false))
        refuse(file, "added token '" + content + "' has single_word: true, which is not supported");
      const bool special = bool_or(a, "special", false);
      added.push_back(
          Added{content, fb::AddedToken(static_cast<uint32_t>(id), special, bool_or(a, "lstrip", false),
                                        bool_or(a, "rstrip", false), false, bool_or(a, "normalized", !special))});
      max_id = std::max(max_id, static_cast<int32_t>(id));
    }
    const int n = max_id + 1;
    if (n <= 0) refuse(file, "the vocabulary is empty");

    // per-token pieces
    std::vector<std::string> pieces(static_cast<size_t>(n)), decoded(static_cast<size_t>(n));
    std::vector<bool> in_table(static_cast<size_t>(n), false);
    t.token_flags.assign(static_cast<size_t>(n), 0);
    const auto alphabet = byte_alphabet();
    std::unordered_map<uint32_t, uint8_t> inverse;
    for (int b = 0; b < 256; ++b) inverse[alphabet[static_cast<size_t>(b)]] = static_cast<uint8_t>(b);
    std::vector<bool> seen(static_cast<size_t>(n), false);
    for (const auto& [piece, id] : ids) {
      if (seen[static_cast<size_t>(id)]) refuse(file, "vocab gives id " + std::to_string(id) + " to two tokens");
      seen[static_cast<size_t>(id)] = true;
      std::string bytes = piece;
      bool reachable = !piece.empty();
      if (t.byte_level) reachable = reachable && alphabet_to_bytes(piece, inverse, bytes);
      if (!reachable) bytes = piece;
      pieces[static_cast<size_t>(id)] = bytes;
      decoded[static_cast<size_t>(id)] = t.byte_level ? bytes : r.decode_piece(piece);
      in_table[static_cast<size_t>(id)] = reachable;
    }
    for (const Added& a : added) {
      const size_t id = a.token.id();
      const bool in_vocab = seen[id];
      if (in_vocab && pieces[id] != a.content) in_table[id] = false;  // its vocab form is not its text
      pieces[id] = a.content;
      decoded[id] = r.decode_piece(a.content);
      t.token_flags[id] |= text::kTokenAdded | (a.token.special() ? text::kTokenSpecial : 0);
      t.added.push_back(a.token);
      ids.emplace(a.content, static_cast<int32_t>(id));
    }
    // A token matched after normalization (normalized: true) is matched as it is: right
    // when the normalizers leave it unchanged (NFC of ASCII), refused otherwise.
    for (const Added& a : added) {
      if (!a.token.normalized()) continue;
      bool ascii = true;
      for (const char ch : a.content) ascii = ascii && static_cast<unsigned char>(ch) < 0x80;
      for (const TextStepSpec& s : t.normalizers)
        if (s.kind != fb::TextStepKind_Nfc || !ascii)
          refuse(file, "added token '" + a.content +
                           "' is matched after normalization (normalized: true), which "
                           "would change it: not supported");
    }
    t.piece_offsets.push_back(0);
    t.decoded_offsets.push_back(0);
    for (int i = 0; i < n; ++i) {
      t.pieces += pieces[static_cast<size_t>(i)];
      t.piece_offsets.push_back(static_cast<uint32_t>(t.pieces.size()));
      t.decoded += decoded[static_cast<size_t>(i)];
      t.decoded_offsets.push_back(static_cast<uint32_t>(t.decoded.size()));
    }
    // piece hash table
    const uint32_t table = table_size(static_cast<size_t>(n));
    int bits = 0;
    while ((1u << bits) < table) ++bits;
    t.piece_table.assign(table, 0);
    for (int i = 0; i < n; ++i) {
      const std::string& p = pieces[static_cast<size_t>(i)];
      if (!in_table[static_cast<size_t>(i)] ||
          (t.token_flags[static_cast<size_t>(i)] & text::kTokenAdded && !seen[static_cast<size_t>(i)]))
        continue;
      uint32_t slot = text::piece_slot(p.data(), p.size(), bits);
      bool duplicate = false;
      while (t.piece_table[slot] != 0) {
        const uint32_t other = t.piece_table[slot] - 1;
        duplicate = duplicate || pieces[other] == p;
        slot = (slot + 1) & (table - 1);
      }
      if (!duplicate) t.piece_table[slot] = static_cast<uint32_t>(i) + 1;
    }
    // byte tokens: the byte-level alphabet's symbols, or <0xNN>
    t.byte_tokens.assign(256, -1);
    for (int b = 0; b < 256; ++b) {
      std::string key;
      if (t.byte_level) {
        char u[4];
        key.assign(u, static_cast<size_t>(text::utf8_encode(alphabet[static_cast<size_t>(b)], u)));
      } else if (byte_fallback) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "<0x%02X>", b);
        key = hex;
      } else {
        continue;
      }
      const auto it = m["vocab"].find(key);
      if (it != m["vocab"].end()) t.byte_tokens[static_cast<size_t>(b)] = it->get<int32_t>();
    }
    // unk
    const std::string unk = str_or(m, "unk_token", "");
    if (!unk.empty()) {
      const auto it = ids.find(unk);
      if (it == ids.end()) refuse(file, "unk_token '" + unk + "' is not in the vocabulary");
      t.unk_id = it->second;
    }
    // merges, by rank
    if (!m.contains("merges") || !m["merges"].is_array()) refuse(file, "model has no merges list");
    const json& merges = m["merges"];
    const uint32_t mtable = table_size(merges.size());
    int mbits = 0;
    while ((1u << mbits) < mtable) ++mbits;
    t.merges.assign(mtable, fb::MergeSlot(0xffffffffu, 0, 0, 0));
    const auto& vocab = m["vocab"];
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const json& e = merges[rank];
      std::string a, b;
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
          refuse(file, "merge " + std::to_string(rank) + " " + e.dump() + " is not two tokens");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        refuse(file, "merge " + std::to_string(rank) + " " + e.dump() + " is not two tokens");
      }
      const auto ia = vocab.find(a), ib = vocab.find(b), im = vocab.find(a + b);
      for (const auto& [it, name] : {std::pair{ia, a}, std::pair{ib, b}, std::pair{im, a + b}})
        if (it == vocab.end())
          refuse(file, "merge " + std::to_string(rank) + " " + e.dump() + " names token " + json(name).dump() +
                           ", which is not in the vocabulary");
      const uint32_t left = ia->get<uint32_t>(), right = ib->get<uint32_t>(), merged = im->get<uint32_t>();
      uint32_t slot = text::merge_slot(left, right, mbits);
      bool duplicate = false;
      while (t.merges[slot].left() != 0xffffffffu) {
        duplicate = duplicate || (t.merges[slot].left() == left && t.merges[slot].right() == right);
        slot = (slot + 1) & (mtable - 1);
      }
      if (!duplicate) t.merges[slot] = fb::MergeSlot(left, right, static_cast<uint32_t>(rank), merged);
    }

    // post-processor and tokenizer_config.json
    const auto id_of = [&](const std::string& name) {
      const auto it = ids.find(name);
      return it == ids.end() ? -1 : it->second;
    };
    r.post_processor(j.value("post_processor", json()), id_of);
    t.cleanup = true;  // the reference's default when tokenizer_config.json does not say
    const auto config_file = dir / "tokenizer_config.json";
    if (std::filesystem::exists(config_file)) {
      const json c = read_json_file(config_file);
      if (!c.is_object()) refuse(config_file, "is not a JSON object");
      if (c.contains("bos_token")) t.bos_id = token_id_of(c["bos_token"], ids);
      if (c.contains("eos_token")) t.eos_id = token_id_of(c["eos_token"], ids);
      t.cleanup = bool_or(c, "clean_up_tokenization_spaces", true);
      if (bool_or(c, "remove_space", false) || bool_or(c, "do_lowercase_and_remove_accent", false))
        refuse(config_file, "remove_space / do_lowercase_and_remove_accent are not supported");
      // The post-processor decides, as in the reference (@huggingface/tokenizers); transformers'
      // Python tokenizers rebuild it from these two for some classes: say where they differ.
      for (const char* key : {"add_bos_token", "add_eos_token"}) {
        if (!c.contains(key) || !c[key].is_boolean()) continue;
        const bool bos = std::string(key) == "add_bos_token";
        const int32_t id = bos ? t.bos_id : t.eos_id;
        const std::vector<int32_t>& list = bos ? t.prefix_ids : t.suffix_ids;
        const bool has = id >= 0 && std::find(list.begin(), list.end(), id) != list.end();
        if (id >= 0 && c[key].get<bool>() != has)
          t.notes.push_back(std::string("tokenizer_config.json says ") + key + ": " + (has ? "false" : "true") +
                            " but tokenizer.json's post-processor " + (has ? "adds" : "does not add") +
                            " that token; encoding follows the post-processor, as Hugging Face's tokenizers "
                            "library does (transformers' Python tokenizer may differ)");
      }
      for (const json& s : c.value("additional_special_tokens", json::array())) {
        const int32_t id = token_id_of(s, ids);
        if (id >= 0) t.token_flags[static_cast<size_t>(id)] |= text::kTokenSpecial;
      }
      if (c.contains("chat_template")) {
        std::string tpl;
        if (c["chat_template"].is_string()) tpl = c["chat_template"].get<std::string>();
        else if (c["chat_template"].is_array())
          for (const json& e : c["chat_template"])
            if (e.value("name", "") == "default" && e.contains("template")) tpl = e["template"].get<std::string>();
        t.chat = detect_chat(tpl);
        if (t.chat == fb::ChatTemplate_None && !tpl.empty())
          t.notes.push_back(
              "tokenizer_config.json's chat_template is not one moe_infer --chat knows "
              "(ChatML, Mistral [INST], Granite, Tulu): give --chat-template NAME");
      }
    }
  } catch (const json::exception& e) {
    throw InputError("'" + file.string() + "' (or tokenizer_config.json) has an entry of the wrong type: " + e.what());
  }
  return t;
}

flatbuffers::Offset<fb::Tokenizer> write_bpe_tokenizer(flatbuffers::FlatBufferBuilder& fbb,
                                                       const BpeTokenizerTables& t) {
  auto steps = [&](const std::vector<TextStepSpec>& list) {
    std::vector<flatbuffers::Offset<fb::TextStep>> out;
    for (const TextStepSpec& s : list)
      out.push_back(fb::CreateTextStep(fbb, s.kind, fbb.CreateString(s.text), fbb.CreateString(s.replacement), s.flag,
                                       s.use_regex, s.prepend));
    return fbb.CreateVector(out);
  };
  const auto normalizers = steps(t.normalizers);
  const auto pre_tokenizers = steps(t.pre_tokenizers);
  const auto pieces = fbb.CreateVector(reinterpret_cast<const uint8_t*>(t.pieces.data()), t.pieces.size());
  const auto piece_offsets = fbb.CreateVector(t.piece_offsets);
  const auto decoded = fbb.CreateVector(reinterpret_cast<const uint8_t*>(t.decoded.data()), t.decoded.size());
  const auto decoded_offsets = fbb.CreateVector(t.decoded_offsets);
  const auto flags = fbb.CreateVector(t.token_flags);
  const auto piece_table = fbb.CreateVector(t.piece_table);
  const auto merges = fbb.CreateVectorOfStructs(t.merges);
  const auto byte_tokens = fbb.CreateVector(t.byte_tokens);
  // The engine's checksum over the vectors just built (their pointers last until the next addition).
  const uint32_t crc = text::bpe_tables_crc(
      flatbuffers::GetTemporaryPointer(fbb, pieces), flatbuffers::GetTemporaryPointer(fbb, piece_offsets),
      flatbuffers::GetTemporaryPointer(fbb, decoded), flatbuffers::GetTemporaryPointer(fbb, decoded_offsets),
      flatbuffers::GetTemporaryPointer(fbb, flags), flatbuffers::GetTemporaryPointer(fbb, piece_table),
      flatbuffers::GetTemporaryPointer(fbb, merges), flatbuffers::GetTemporaryPointer(fbb, byte_tokens));
  const auto added = fbb.CreateVectorOfStructs(t.added);
  const auto prefix = fbb.CreateVector(t.prefix_ids);
  const auto suffix = fbb.CreateVector(t.suffix_ids);
  const auto unicode = t.needs_unicode ? write_unicode_data(fbb) : flatbuffers::Offset<fb::UnicodeData>();
  fb::TokenizerBuilder b(fbb);
  b.add_kind(fb::TokenizerKind_Bpe);
  b.add_pieces(pieces);
  b.add_piece_offsets(piece_offsets);
  b.add_decoded(decoded);
  b.add_decoded_offsets(decoded_offsets);
  b.add_token_flags(flags);
  b.add_piece_table(piece_table);
  b.add_merges(merges);
  b.add_byte_tokens(byte_tokens);
  b.add_byte_level(t.byte_level);
  b.add_unk_id(t.unk_id);
  b.add_fuse_unk(t.fuse_unk);
  b.add_ignore_merges(t.ignore_merges);
  b.add_added_tokens(added);
  b.add_normalizers(normalizers);
  b.add_pre_tokenizers(pre_tokenizers);
  b.add_decode_strip_spaces(static_cast<uint8_t>(t.strip_spaces));
  b.add_decode_cleanup(t.cleanup);
  b.add_prefix_ids(prefix);
  b.add_suffix_ids(suffix);
  b.add_bos_id(t.bos_id);
  b.add_eos_id(t.eos_id);
  b.add_chat_template(t.chat);
  if (t.needs_unicode) b.add_unicode(unicode);
  b.add_crc32c(crc);
  return b.Finish();
}

std::string piece_text(const text::BpeTokenizer& t, int32_t id) {
  size_t n;
  const char* p = t.piece(id, n);
  if (!t.byte_level() || t.is_added(id)) return std::string(p, n);
  static const std::array<uint32_t, 256> alphabet = byte_alphabet();
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    char u[4];
    out.append(u, static_cast<size_t>(text::utf8_encode(alphabet[static_cast<uint8_t>(p[i])], u)));
  }
  return out;
}

std::vector<uint8_t> bpe_tokenizer_buffer(const BpeTokenizerTables& t) {
  flatbuffers::FlatBufferBuilder fbb(t.pieces.size() * 3 + (1 << 20));
  fbb.Finish(write_bpe_tokenizer(fbb, t));
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

}  // namespace moe::converter
