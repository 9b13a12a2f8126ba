// The Unicode tables a .moe file carries (converter/unicode/unicode_data.inc) and the
// engine's NFC over them, against utf8proc itself: every code point, alone and among
// combining marks, and random sequences.
#include <gtest/gtest.h>
#include <utf8proc.h>

#include <random>
#include <string>
#include <vector>

#include "converter/unicode/unicode_data.hpp"
#include "moe/text/bpe_check.hpp"
#include "moe/text/unicode.hpp"

namespace moe::test {
namespace {

class Unicode : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fbb_ = new flatbuffers::FlatBufferBuilder();
    fbb_->Finish(converter::write_unicode_data(*fbb_));
    ASSERT_FALSE(text::detail::check_unicode(flatbuffers::GetRoot<fb::UnicodeData>(fbb_->GetBufferPointer()), u_));
  }
  static void TearDownTestSuite() { delete fbb_; }

  static std::string utf8(const std::vector<uint32_t>& cps) {
    std::string s;
    char b[4];
    for (const uint32_t cp : cps) s.append(b, static_cast<size_t>(text::utf8_encode(cp, b)));
    return s;
  }
  static std::string reference_nfc(const std::string& s) {
    utf8proc_uint8_t* out = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str()));
    std::string r(reinterpret_cast<char*>(out));
    std::free(out);
    return r;
  }
  static std::string our_nfc(const std::string& s) {
    if (u_.nfc_quick_yes(s.data(), s.size())) return s;
    std::string out(3 * s.size() + 8, '\0');
    std::vector<uint32_t> cps(2 * (3 * s.size() + 8));
    const long n = u_.nfc(s.data(), s.size(), out.data(), out.size(), cps.data(), cps.size());
    EXPECT_GE(n, 0);
    out.resize(static_cast<size_t>(n < 0 ? 0 : n));
    return out;
  }
  static bool valid(uint32_t cp) { return cp < 0xd800 || (cp > 0xdfff && cp < 0x110000); }

  static flatbuffers::FlatBufferBuilder* fbb_;
  static text::UnicodeView u_;
};
flatbuffers::FlatBufferBuilder* Unicode::fbb_ = nullptr;
text::UnicodeView Unicode::u_{};

TEST_F(Unicode, CategoriesAndWhiteSpaceAreUtf8procs) {
  for (uint32_t cp = 0; cp < text::kCodePoints; ++cp) {
    ASSERT_EQ(static_cast<int>(u_.category(cp)), static_cast<int>(utf8proc_category(static_cast<int32_t>(cp)))) << cp;
  }
  for (const uint32_t cp : {0x09u, 0x20u, 0x85u, 0xa0u, 0x2028u, 0x3000u})
    EXPECT_TRUE(text::is_white_space(u_, cp)) << cp;
  for (const uint32_t cp : {0x200bu, 0xfeffu, 0x41u}) EXPECT_FALSE(text::is_white_space(u_, cp)) << cp;
}

TEST_F(Unicode, NfcOfEveryCodePointAloneAndAmongMarks) {
  for (uint32_t cp = 0; cp < text::kCodePoints; ++cp) {
    if (!valid(cp) || cp == 0) continue;  // (the reference reads C strings)
    for (const std::vector<uint32_t>& seq :
         {std::vector<uint32_t>{cp}, {cp, 0x301}, {cp, 0x323, 0x302}, {'a', cp}, {cp, 0x1161}, {0x1100, cp}}) {
      const std::string s = utf8(seq);
      ASSERT_EQ(our_nfc(s), reference_nfc(s)) << std::hex << cp;
    }
    // The bounds encode's scratch relies on: NFC grows UTF-8 at most 3x, NFD is at most
    // 2 code points per byte.
    uint32_t parts[8];
    const std::string one = utf8({cp});
    EXPECT_LE(static_cast<size_t>(u_.decompose(cp, parts)), 2 * one.size());
    EXPECT_LE(reference_nfc(one).size(), 3 * one.size());
  }
}

TEST_F(Unicode, NfcOfRandomSequences) {
  // Starters that compose, combining marks of several classes, Hangul jamo and syllables.
  const std::vector<uint32_t> pool = {'a',    'e',    'o',    'u',    'A',    'E',    0x3b1, 0x3c9,  0x1100,
                                      0x1161, 0x11a8, 0xac00, 0xac01, 0x300,  0x301,  0x302, 0x308,  0x313,
                                      0x314,  0x323,  0x327,  0x345,  0x334,  0x5b0,  0x93c, 0x915,  0x9c7,
                                      0x9be,  0xb47,  0xb3e,  0x1f00, 0x212b, 0x0958, 0xe9,  0x1e63, 0x20};
  std::mt19937 rng(5);
  for (int i = 0; i < 200000; ++i) {
    std::vector<uint32_t> seq(1 + rng() % 7);
    for (uint32_t& cp : seq) cp = pool[rng() % pool.size()];
    const std::string s = utf8(seq);
    ASSERT_EQ(our_nfc(s), reference_nfc(s)) << i;
  }
}

}  // namespace
}  // namespace moe::test
