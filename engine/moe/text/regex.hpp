// The regular expressions of tokenizer.json's pre-tokenizers (Split, ByteLevel's GPT-2
// pattern): a backtracking matcher with the semantics of the reference (leftmost match,
// alternatives in order, greedy quantifiers, lookahead), compiled into a fixed-size
// program and run without allocation. The subset is what real tokenizers use; anything
// else is refused by `compile` with the construct and its offset.
//   atoms       a literal, \uXXXX \xHH \x{..} \t \n \r \f \v \0 \\ and escaped punctuation,
//               . (not \n), [...] classes ([^...], ranges, escapes inside),
//               \p{..} \P{..} (general categories: L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No
//               P.. S.. Z.. C..), \s \S (White_Space), \d \D (Nd)
//   groups      (..) (?:..) (?i:..) (ASCII letters, as the reference), (?=..) (?!..)
//   quantifiers ? * + {m} {m,} {m,n}, lazy with a trailing ?, on an atom; ? on a group
//   anchors     ^ $ (the reference's: at the text's ends or beside a \n)
#pragma once

#include <cstddef>
#include <cstdint>

#include "moe/error.hpp"
#include "moe/text/unicode.hpp"
#include "moe/text/utf8.hpp"

namespace moe::text {

// ECMAScript's whitespace (what JavaScript's \s and trim() mean): the reference's GPT-2
// pattern is a JavaScript regex, and it trims with JavaScript.
constexpr bool is_ecma_space(uint32_t cp) {
  return (cp >= 9 && cp <= 13) || cp == 0x20 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000 || cp == 0xfeff;
}

// Unicode's White_Space property (a bit of the file's tables).
inline bool is_white_space(const UnicodeView& u, uint32_t cp) {
  if (cp < 0x80) return (cp >= 9 && cp <= 13) || cp == 0x20;
  return (u.props(cp) & kSpaceBit) != 0;
}

class Regex {
 public:
  static constexpr int kMaxNodes = 320, kMaxItems = 320, kMaxBranches = 96, kMaxClasses = 64;
  static constexpr long kMaxSteps = 1'000'000;

  bool exhausted() const { return exhausted_; }

  // `ecma_space`: \s is JavaScript's (the GPT-2 pattern the reference runs as a JS regex),
  // else Unicode White_Space (tokenizer.json's Split patterns, translated so by the reference).
  Error compile(const char* pattern, size_t n, bool ecma_space) {
    p_ = pattern;
    n_ = n;
    at_ = 0;
    n_nodes_ = n_items_ = n_branches_ = n_classes_ = 0;
    ecma_space_ = ecma_space;
    exhausted_ = false;
    error_ = Error::none();
    accept_ = add_node(Node{kAccept});
    Frag f = parse_alternation(false, 0);
    if (error_) return error_;
    if (at_ != n_) return fail("unbalanced ')'");
    patch(f.dangling, accept_);
    start_ = f.start;
    return Error::none();
  }

  // The first match at or after byte `from` of text[0..n): [start, end). Empty matches are
  // not reported (the reference drops them). Returns false when there is none.
  // A match that needs more than kMaxSteps steps plus a few per remaining byte from one
  // position (a pattern built to backtrack exponentially) stops the search:
  // `exhausted()` then says so. Real patterns need a handful per byte.
  bool find(const char* text, size_t n, size_t from, const UnicodeView& u, size_t& start, size_t& end) const {
    Run run{text, n, &u};
    for (size_t at = from; at < n;) {
      steps_ = 0;
      budget_ = kMaxSteps + 8 * static_cast<long>(n - at);
      const long e = match(run, start_, at);
      if (steps_ > budget_) return exhausted_ = true, false;
      if (e > static_cast<long>(at)) {
        start = at;
        end = static_cast<size_t>(e);
        return true;
      }
      at = next_char(text, n, at);
    }
    return false;
  }

 private:
  enum Kind : uint8_t { kAccept, kEmpty, kChar, kClass, kAlt, kRepeat, kLook, kLineStart, kLineEnd };
  enum ItemKind : uint8_t { kRange, kCategories, kNotCategories, kSpace, kNotSpace };
  struct Node {
    Kind kind;
    bool flag = false;  // kChar: ASCII case-insensitive; kRepeat: greedy; kLook: negative
    uint16_t a = 0;     // kClass: class; kAlt: first branch; kRepeat: atom node; kLook: body
    uint16_t b = 0;     // kAlt: branch count
    uint16_t min = 0, max = 0;
    int32_t next = -1;  // while compiling, an unpatched `next` links the fragment's dangling ends
    uint32_t cp = 0;    // kChar
  };
  struct Item {
    ItemKind kind;
    uint32_t lo, hi;  // kRange: [lo, hi]; kCategories: a category bit set in lo
  };
  struct Class {
    uint16_t first, count;
    bool negated, icase;
  };
  struct Frag {
    int start;
    int dangling;  // a list threaded through `next`: -1 ends it, else node index
  };
  struct Run {
    const char* s;
    size_t n;
    const UnicodeView* u;
  };
  static constexpr uint16_t kUnbounded = 0xffff;
  static constexpr int kEnd = -1;

  const char* p_ = nullptr;
  size_t n_ = 0, at_ = 0;
  bool ecma_space_ = false;
  Error error_;
  Node nodes_[kMaxNodes];
  Item items_[kMaxItems];
  uint16_t branches_[kMaxBranches];
  Class classes_[kMaxClasses];
  int n_nodes_ = 0, n_items_ = 0, n_branches_ = 0, n_classes_ = 0;
  int start_ = 0, accept_ = 0;
  mutable long steps_ = 0, budget_ = 0;
  mutable bool exhausted_ = false;

  // ---- compiling
  Frag fail_frag(const char* what) {
    if (!error_)
      error_ = Error::make(ErrorCode::bad_tokenizer, "regex: %s at offset %lu", what, static_cast<unsigned long>(at_));
    return Frag{0, kEnd};
  }
  Error fail(const char* what) {
    fail_frag(what);
    return error_;
  }
  int add_node(Node n) {
    if (n_nodes_ == kMaxNodes) return fail_frag("too many nodes"), 0;
    nodes_[n_nodes_] = n;
    return n_nodes_++;
  }
  // Dangling ends are linked through `next` as -2 - index.
  static int link_of(int next) { return next <= -2 ? -2 - next : kEnd; }
  void patch(int dangling, int target) {
    while (dangling != kEnd) {
      const int following = link_of(nodes_[dangling].next);
      nodes_[dangling].next = target;
      dangling = following;
    }
  }
  int join(int a, int b) {  // concatenated dangling lists
    if (a == kEnd) return b;
    int last = a;
    while (link_of(nodes_[last].next) != kEnd) last = link_of(nodes_[last].next);
    nodes_[last].next = b == kEnd ? kEnd : -2 - b;
    return a;
  }
  Frag single(Node n) {
    n.next = kEnd;
    const int i = add_node(n);
    return Frag{i, i};
  }
  bool more() const { return at_ < n_; }
  char peek() const { return p_[at_]; }
  bool eat(char c) {
    if (more() && peek() == c) return ++at_, true;
    return false;
  }
  bool eat(const char* s) {
    size_t k = 0;
    while (s[k] != 0 && at_ + k < n_ && p_[at_ + k] == s[k]) ++k;
    if (s[k] != 0) return false;
    at_ += k;
    return true;
  }

  Frag parse_alternation(bool icase, int depth) {
    if (depth > 16) return fail_frag("groups nested too deep");
    Frag first = parse_sequence(icase, depth);
    if (error_ || !more() || peek() != '|') return first;
    uint16_t starts[kMaxBranches];
    int count = 0;
    int dangling = first.dangling;
    starts[count++] = static_cast<uint16_t>(first.start);
    while (eat('|')) {
      Frag f = parse_sequence(icase, depth);
      if (error_) return f;
      if (count == kMaxBranches) return fail_frag("too many alternatives");
      starts[count++] = static_cast<uint16_t>(f.start);
      dangling = join(dangling, f.dangling);
    }
    if (n_branches_ + count > kMaxBranches) return fail_frag("too many alternatives");
    Node alt{kAlt};
    alt.a = static_cast<uint16_t>(n_branches_);
    alt.b = static_cast<uint16_t>(count);
    for (int i = 0; i < count; ++i) branches_[n_branches_++] = starts[i];
    alt.next = kEnd;
    const int a = add_node(alt);
    return Frag{a, dangling};
  }

  Frag parse_sequence(bool icase, int depth) {
    Frag seq{-1, kEnd};
    while (more() && peek() != '|' && peek() != ')') {
      Frag f = parse_quantified(icase, depth);
      if (error_) return f;
      if (seq.start < 0) seq = f;
      else patch(seq.dangling, f.start), seq.dangling = f.dangling;
    }
    if (seq.start < 0) return single(Node{kEmpty});
    return seq;
  }

  Frag parse_quantified(bool icase, int depth) {
    const bool group = more() && peek() == '(';
    const size_t atom_at = at_;
    Frag atom = parse_atom(icase, depth);
    if (error_ || !more()) return atom;
    uint16_t min = 0, max = 0;
    const char q = peek();
    if (q == '?') min = 0, max = 1, ++at_;
    else if (q == '*') min = 0, max = kUnbounded, ++at_;
    else if (q == '+') min = 1, max = kUnbounded, ++at_;
    else if (q == '{' && parse_braces(min, max)) {
    } else return atom;
    const bool lazy = eat('?');
    if (more() && (peek() == '?' || peek() == '*' || peek() == '+' || peek() == '{'))
      return fail_frag("a quantifier after a quantifier");
    if (group || nodes_[atom.start].kind == kLook || nodes_[atom.start].kind == kLineStart ||
        nodes_[atom.start].kind == kLineEnd) {
      if (min != 0 || max != 1 || lazy) return at_ = atom_at, fail_frag("a repeated group");
      // (..)? : an alternative between the group and nothing
      Frag none = single(Node{kEmpty});
      if (n_branches_ + 2 > kMaxBranches) return fail_frag("too many alternatives");
      Node alt{kAlt};
      alt.a = static_cast<uint16_t>(n_branches_);
      alt.b = 2;
      branches_[n_branches_++] = static_cast<uint16_t>(atom.start);
      branches_[n_branches_++] = static_cast<uint16_t>(none.start);
      alt.next = kEnd;
      const int a = add_node(alt);
      return Frag{a, join(atom.dangling, none.dangling)};
    }
    if (max < min) return fail_frag("a {m,n} with n < m");
    Node rep{kRepeat};
    rep.flag = !lazy;
    rep.a = static_cast<uint16_t>(atom.start);
    rep.min = min;
    rep.max = max;
    return single(rep);
  }

  bool parse_braces(uint16_t& min, uint16_t& max) {
    size_t k = at_ + 1;
    auto number = [&](uint32_t& v) {
      const size_t from = k;
      v = 0;
      while (k < n_ && p_[k] >= '0' && p_[k] <= '9' && v < 10000) v = v * 10 + static_cast<uint32_t>(p_[k++] - '0');
      return k > from;
    };
    uint32_t lo = 0, hi = 0;
    if (!number(lo)) return false;
    if (k < n_ && p_[k] == '}') hi = lo;
    else if (k < n_ && p_[k] == ',') {
      ++k;
      if (k < n_ && p_[k] == '}') hi = kUnbounded;
      else if (!number(hi)) return false;
    } else return false;
    if (k >= n_ || p_[k] != '}' || lo >= kUnbounded || (hi != kUnbounded && hi >= kUnbounded)) return false;
    at_ = k + 1;
    min = static_cast<uint16_t>(lo);
    max = static_cast<uint16_t>(hi);
    return true;
  }

  Frag parse_atom(bool icase, int depth) {
    const char c = peek();
    if (c == '(') {
      ++at_;
      if (eat("?:")) return group_body(icase, depth);
      if (eat("?i:")) return group_body(true, depth);
      if (eat("?=") || eat("?!")) {
        const bool negative = p_[at_ - 1] == '!';
        Frag body = parse_alternation(icase, depth + 1);
        if (error_) return body;
        if (!eat(')')) return fail_frag("an unclosed '('");
        patch(body.dangling, accept_);
        Node look{kLook};
        look.flag = negative;
        look.a = static_cast<uint16_t>(body.start);
        return single(look);
      }
      if (more() && peek() == '?') return fail_frag("an unsupported group (?...)");
      return group_body(icase, depth);
    }
    if (c == '[') return parse_class(icase);
    if (c == '.') {
      ++at_;  // the reference's '.': anything but \n
      const int cls = new_class(true, false);
      if (cls < 0) return Frag{0, kEnd};
      add_item(Item{kRange, '\n', '\n'});
      return class_node(cls);
    }
    if (c == '^') return ++at_, single(Node{kLineStart});
    if (c == '$') return ++at_, single(Node{kLineEnd});
    if (c == '*' || c == '+' || c == '?' || c == '{' || c == ')')
      return fail_frag("a quantifier with nothing before it");
    if (c == '\\') {
      Item item{};
      bool is_class = false;
      if (!parse_escape(item, is_class)) return Frag{0, kEnd};
      if (!is_class) return char_node(item.lo, icase);
      const bool negated = item.kind == kNotCategories || item.kind == kNotSpace;
      if (item.kind == kNotCategories) item.kind = kCategories;
      if (item.kind == kNotSpace) item.kind = kSpace;
      const int cls = new_class(negated, icase);
      if (cls < 0) return Frag{0, kEnd};
      add_item(item);
      return class_node(cls);
    }
    uint32_t cp = 0;
    if (!parse_literal(cp)) return Frag{0, kEnd};
    return char_node(cp, icase);
  }

  Frag group_body(bool icase, int depth) {
    Frag body = parse_alternation(icase, depth + 1);
    if (error_) return body;
    if (!eat(')')) return fail_frag("an unclosed '('");
    return body;
  }

  Frag char_node(uint32_t cp, bool icase) {
    Node n{kChar};
    n.cp = cp;
    n.flag = icase && ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z');
    return single(n);
  }
  Frag class_node(int cls) {
    Node n{kClass};
    n.a = static_cast<uint16_t>(cls);
    return single(n);
  }
  int new_class(bool negated, bool icase) {
    if (n_classes_ == kMaxClasses) return fail_frag("too many classes"), -1;
    classes_[n_classes_] = Class{static_cast<uint16_t>(n_items_), 0, negated, icase};
    return n_classes_++;
  }
  void add_item(Item item) {
    if (n_items_ == kMaxItems) {
      fail_frag("too many class items");
      return;
    }
    items_[n_items_++] = item;
    ++classes_[n_classes_ - 1].count;
  }

  // One UTF-8 character of the pattern, taken literally.
  bool parse_literal(uint32_t& cp) {
    const int step = utf8_decode(p_ + at_, n_ - at_, cp);
    if (step == 0) return fail_frag("invalid UTF-8"), false;
    at_ += static_cast<size_t>(step);
    return true;
  }
  // A class member: an escape (a character or a class item) or a literal character.
  bool parse_class_member(Item& item, bool& is_class) {
    is_class = false;
    if (peek() == '\\') return parse_escape(item, is_class);
    uint32_t cp = 0;
    if (!parse_literal(cp)) return false;
    item = Item{kRange, cp, cp};
    return true;
  }

  Frag parse_class(bool icase) {
    ++at_;  // [
    const bool negated = eat('^');
    const int cls = new_class(negated, icase);
    if (cls < 0) return Frag{0, kEnd};
    bool first = true;
    while (true) {
      if (!more()) return fail_frag("an unclosed '['");
      if (peek() == ']' && !first) break;
      if (peek() == '[') return fail_frag("a nested class");
      if (p_[at_] == '&' && at_ + 1 < n_ && p_[at_ + 1] == '&') return fail_frag("a class intersection");
      first = false;
      Item lo{};
      bool is_class = false;
      if (!parse_class_member(lo, is_class)) return Frag{0, kEnd};
      if (!is_class && more() && peek() == '-' && at_ + 1 < n_ && p_[at_ + 1] != ']') {
        ++at_;
        Item hi{};
        bool hi_class = false;
        if (!parse_class_member(hi, hi_class)) return Frag{0, kEnd};
        if (hi_class) return fail_frag("a range ending in a class");
        if (hi.lo < lo.lo) return fail_frag("a range out of order");
        lo.hi = hi.lo;
      }
      add_item(lo);
      if (error_) return Frag{0, kEnd};
    }
    ++at_;  // ]
    return class_node(cls);
  }

  // After a backslash: a character (is_class false, item.lo) or a class item.
  bool parse_escape(Item& item, bool& is_class) {
    ++at_;
    if (!more()) return fail_frag("a trailing backslash"), false;
    const char c = p_[at_++];
    is_class = false;
    auto hex = [&](size_t digits, uint32_t& v) {
      v = 0;
      for (size_t i = 0; i < digits; ++i) {
        if (!more()) return false;
        const char h = p_[at_++];
        const int d = h >= '0' && h <= '9'                     ? h - '0'
                      : (h | 0x20) >= 'a' && (h | 0x20) <= 'f' ? (h | 0x20) - 'a' + 10
                                                               : -1;
        if (d < 0) return false;
        v = v * 16 + static_cast<uint32_t>(d);
      }
      return true;
    };
    uint32_t cp = 0;
    switch (c) {
      case 'n': cp = '\n'; break;
      case 'r': cp = '\r'; break;
      case 't': cp = '\t'; break;
      case 'f': cp = '\f'; break;
      case 'v': cp = '\v'; break;
      case '0': cp = 0; break;
      case 'a': cp = 7; break;
      case 'e': cp = 0x1b; break;
      case 'u':
        if (!hex(4, cp)) return fail_frag("a bad \\u escape"), false;
        break;
      case 'x':
        if (eat('{')) {
          size_t digits = 0;
          while (at_ + digits < n_ && p_[at_ + digits] != '}') ++digits;
          if (digits == 0 || digits > 6 || !hex(digits, cp) || !eat('}') || cp > 0x10ffff)
            return fail_frag("a bad \\x{..} escape"), false;
        } else if (!hex(2, cp)) {
          return fail_frag("a bad \\x escape"), false;
        }
        break;
      case 's':
      case 'S':
        is_class = true;
        item = Item{c == 's' ? kSpace : kNotSpace, 0, 0};
        return true;
      case 'd':
      case 'D':
        is_class = true;
        item = Item{c == 'd' ? kCategories : kNotCategories, category_bit(kNd), 0};
        return true;
      case 'p':
      case 'P': {
        if (!eat('{')) return fail_frag("\\p without {..}"), false;
        const size_t from = at_;
        while (more() && peek() != '}') ++at_;
        if (!more()) return fail_frag("an unclosed \\p{"), false;
        const uint32_t bits = category_set(p_ + from, at_ - from);
        ++at_;
        if (bits == 0) return at_ = from, fail_frag("an unsupported Unicode property"), false;
        is_class = true;
        item = Item{c == 'p' ? kCategories : kNotCategories, bits, 0};
        return true;
      }
      default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
          return --at_, fail_frag("an unsupported escape"), false;
        --at_;
        if (!parse_literal(cp)) return false;
    }
    item = Item{kRange, cp, cp};
    return true;
  }

  static uint32_t category_set(const char* name, size_t n) {
    struct Named {
      const char* name;
      uint32_t bits;
    };
    static constexpr uint32_t kP = category_bit(kPc) | category_bit(kPd) | category_bit(kPs) | category_bit(kPe) |
                                   category_bit(kPi) | category_bit(kPf) | category_bit(kPo);
    static constexpr uint32_t kS = category_bit(kSm) | category_bit(kSc) | category_bit(kSk) | category_bit(kSo);
    static constexpr uint32_t kZ = category_bit(kZs) | category_bit(kZl) | category_bit(kZp);
    static constexpr uint32_t kC =
        category_bit(kCc) | category_bit(kCf) | category_bit(kCs) | category_bit(kCo) | category_bit(kCn);
    // clang-format off
    static constexpr Named kNames[] = {
        {"L", kLetters}, {"Letter", kLetters}, {"Lu", category_bit(kLu)}, {"Ll", category_bit(kLl)},
        {"Lt", category_bit(kLt)}, {"Lm", category_bit(kLm)}, {"Lo", category_bit(kLo)},
        {"M", kMarks}, {"Mark", kMarks}, {"Mn", category_bit(kMn)}, {"Mc", category_bit(kMc)}, {"Me", category_bit(kMe)},
        {"N", kNumbers}, {"Number", kNumbers}, {"Nd", category_bit(kNd)}, {"Nl", category_bit(kNl)},
        {"No", category_bit(kNo)},
        {"P", kP}, {"Punctuation", kP}, {"Pc", category_bit(kPc)}, {"Pd", category_bit(kPd)},
        {"Ps", category_bit(kPs)}, {"Pe", category_bit(kPe)}, {"Pi", category_bit(kPi)}, {"Pf", category_bit(kPf)},
        {"Po", category_bit(kPo)},
        {"S", kS}, {"Symbol", kS}, {"Sm", category_bit(kSm)}, {"Sc", category_bit(kSc)}, {"Sk", category_bit(kSk)},
        {"So", category_bit(kSo)},
        {"Z", kZ}, {"Separator", kZ}, {"Zs", category_bit(kZs)}, {"Zl", category_bit(kZl)}, {"Zp", category_bit(kZp)},
        {"C", kC}, {"Other", kC}, {"Cc", category_bit(kCc)}, {"Cf", category_bit(kCf)}, {"Co", category_bit(kCo)},
        {"Cs", category_bit(kCs)}, {"Cn", category_bit(kCn)}};
    // clang-format on
    for (const Named& x : kNames) {
      size_t k = 0;
      while (k < n && x.name[k] == name[k]) ++k;
      if (k == n && x.name[k] == 0) return x.bits;
    }
    return 0;
  }

  // ---- matching
  static size_t next_char(const char* s, size_t n, size_t at) {
    ++at;
    while (at < n && (static_cast<uint8_t>(s[at]) & 0xc0) == 0x80) ++at;
    return at;
  }
  static size_t prev_char(const char* s, size_t at) {
    --at;
    while (at > 0 && (static_cast<uint8_t>(s[at]) & 0xc0) == 0x80) --at;
    return at;
  }

  bool item_has(const Run& r, const Item& it, uint32_t cp) const {
    switch (it.kind) {
      case kRange: return cp >= it.lo && cp <= it.hi;
      case kCategories: return (it.lo >> r.u->category(cp) & 1) != 0;
      case kNotCategories: return (it.lo >> r.u->category(cp) & 1) == 0;
      case kSpace: return ecma_space_ ? is_ecma_space(cp) : is_white_space(*r.u, cp);
      case kNotSpace: return !(ecma_space_ ? is_ecma_space(cp) : is_white_space(*r.u, cp));
    }
    return false;
  }
  bool class_has(const Run& r, const Class& c, uint32_t cp) const {
    bool in = false;
    for (int i = 0; i < c.count && !in; ++i) in = item_has(r, items_[c.first + i], cp);
    if (!in && c.icase && ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z'))
      for (int i = 0; i < c.count && !in; ++i) in = item_has(r, items_[c.first + i], cp ^ 0x20);
    return in != c.negated;
  }
  // One character at `at` matched by a kChar/kClass node: the position after it, or -1.
  long step(const Run& r, const Node& x, size_t at) const {
    if (at >= r.n) return -1;
    uint32_t cp = static_cast<uint8_t>(r.s[at]);
    int len = 1;
    if (cp >= 0x80 && (len = utf8_decode(r.s + at, r.n - at, cp)) == 0) return -1;
    if (x.kind == kChar) {
      if (cp == x.cp || (x.flag && (cp ^ 0x20) == x.cp)) return static_cast<long>(at) + len;
      return -1;
    }
    return class_has(r, classes_[x.a], cp) ? static_cast<long>(at) + len : -1;
  }

  // The end of a match of the program from node `i` at `at`, or -1.
  long match(const Run& r, int i, size_t at) const {
    while (true) {
      if (++steps_ > budget_) return -1;
      const Node& x = nodes_[i];
      switch (x.kind) {
        case kAccept: return static_cast<long>(at);
        case kEmpty: i = x.next; continue;
        case kChar:
        case kClass: {
          const long e = step(r, x, at);
          if (e < 0) return -1;
          at = static_cast<size_t>(e);
          i = x.next;
          continue;
        }
        case kLineStart:
          if (at != 0 && r.s[at - 1] != '\n') return -1;
          i = x.next;
          continue;
        case kLineEnd:
          if (at != r.n && r.s[at] != '\n') return -1;
          i = x.next;
          continue;
        case kLook: {
          const bool found = match(r, x.a, at) >= 0;
          if (found == x.flag) return -1;
          i = x.next;
          continue;
        }
        case kAlt:
          for (int b = 0; b < x.b; ++b)
            if (const long e = match(r, branches_[x.a + b], at); e >= 0) return e;
          return -1;
        case kRepeat: {
          const Node& atom = nodes_[x.a];
          size_t pos = at;
          int count = 0;
          if (x.flag) {  // greedy: as many as possible, then give back one at a time
            while (count < x.max) {
              const long e = step(r, atom, pos);
              if (e < 0) break;
              pos = static_cast<size_t>(e);
              ++count;
            }
            for (; count >= x.min; --count) {
              if (const long e = match(r, x.next, pos); e >= 0) return e;
              if (count == 0) break;
              pos = prev_char(r.s, pos);
            }
            return -1;
          }
          while (true) {  // lazy
            if (count >= x.min)
              if (const long e = match(r, x.next, pos); e >= 0) return e;
            if (count == x.max) return -1;
            const long e = step(r, atom, pos);
            if (e < 0) return -1;
            pos = static_cast<size_t>(e);
            ++count;
          }
        }
      }
      return -1;
    }
  }
};

// The pattern ByteLevel's use_regex runs (GPT-2's), as the reference writes it.
inline constexpr char kGpt2Pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

}  // namespace moe::text
