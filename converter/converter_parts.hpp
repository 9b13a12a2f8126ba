// The pieces both ways of writing a .moe file share (converter.cpp builds small files in
// memory; converter_streaming.cpp streams large ones): the name a tensor is stored
// under, what makes two tensors share bytes, and the FlatBuffer tables around the
// tensors. Internal to the converter library.
#pragma once

#include <map>
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

// A conversion's report begun from the checkpoint: config, recipe, the checkpoint's notes
// and one on the checkpoint tensors no spec uses. Refuses a negative group size.
Conversion begin_conversion(const Checkpoint& ck, const QuantRecipe& recipe);
// Counts a tensor into its class's line of the report; its bytes only where stored
// (first_use: a tied tensor is counted once).
void tally(std::map<int, ClassReport>& classes, const TensorSpec& spec, DType dtype, size_t stored_bytes,
           bool first_use);
// Ends the report: the class lines, and notes on int8 tensors whose columns the group
// size does not divide and on int4 ones stored int8.
void finish_conversion(Conversion& out, const std::map<int, ClassReport>& classes, int ungrouped,
                       const QuantRecipe& recipe, const ModelConfig& config);
// Whether any tensor of the config is stored q4 (the file then needs format version 5).
bool stores_q4(const ModelConfig& config, const QuantRecipe& recipe);
// convert_checkpoint on an opened checkpoint.
Conversion convert_in_memory(const Checkpoint& ck, const ConvertOptions& options);

}  // namespace moe::converter::detail
