// The Unicode tables a BPE tokenizer carries in its .moe file (schema's UnicodeData),
// generated from utf8proc into unicode_data.inc by gen_unicode_data.cpp: the converter
// needs no Unicode library to write them, on any host it is built for.
#pragma once

#include "moe_model_generated.h"

namespace moe::converter {

flatbuffers::Offset<fb::UnicodeData> write_unicode_data(flatbuffers::FlatBufferBuilder& fbb);
const char* unicode_version();

}  // namespace moe::converter
