// The pieces both ways of writing a .moe file share (converter.cpp builds small files in
// memory; converter_streaming.cpp streams large ones): the name a tensor is stored
// under, what makes two tensors share bytes, and the FlatBuffer tables around the
// tensors. Internal to the converter library.
#pragma once

#include <string>
#include <vector>

#include "converter/checkpoint.hpp"
#include "converter/converter.hpp"
#include "moe_model_generated.h"

namespace moe::converter::detail {

// The checkpoint name(s) of a tensor, for messages and the file's `name` field.
std::string stored_name(const std::vector<TensorSource>& sources);
// Tensors with the same key (tied embeddings) are stored once and referenced twice.
std::string share_key(const TensorSource& first, DType dtype);
// The Model table: config, tokenizer, provenance and the given tensors.
flatbuffers::Offset<fb::Model> create_model(
    flatbuffers::FlatBufferBuilder& fbb, const Checkpoint& ck, const QuantRecipe& recipe, uint32_t version,
    flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Tensor>>> tensors);

}  // namespace moe::converter::detail
