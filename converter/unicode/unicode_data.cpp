#include "converter/unicode/unicode_data.hpp"

#include <cstdint>

namespace moe::converter {
namespace {
#include "converter/unicode/unicode_data.inc"
}  // namespace

flatbuffers::Offset<fb::UnicodeData> write_unicode_data(flatbuffers::FlatBufferBuilder& fbb) {
  const auto version = fbb.CreateString(kUnicodeVersion);
  const auto index = fbb.CreateVector(kBlockIndex, sizeof kBlockIndex / sizeof kBlockIndex[0]);
  const auto blocks = fbb.CreateVector(kBlocks, sizeof kBlocks);
  const auto decomposed = fbb.CreateVector(kDecomposed, sizeof kDecomposed / 4);
  const auto offsets = fbb.CreateVector(kDecompositionOffsets, sizeof kDecompositionOffsets / 4);
  const auto decompositions = fbb.CreateVector(kDecompositions, sizeof kDecompositions / 4);
  const auto combining = fbb.CreateVector(kCombining, sizeof kCombining / 4);
  const auto classes = fbb.CreateVector(kCombiningClass, sizeof kCombiningClass);
  const auto compositions = fbb.CreateVector(kCompositions, sizeof kCompositions / 8);
  const auto composed = fbb.CreateVector(kComposed, sizeof kComposed / 4);
  return fb::CreateUnicodeData(fbb, version, index, blocks, decomposed, offsets, decompositions, combining, classes,
                               compositions, composed);
}

const char* unicode_version() { return kUnicodeVersion; }

}  // namespace moe::converter
