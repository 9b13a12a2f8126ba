// The chat formats `moe_infer --chat` wraps a prompt in: one user turn, then the
// assistant's turn opened, as each family's chat_template renders it with
// add_generation_prompt (tokenizer_config.json names the format; moe_convert detects it).
#pragma once

#include <cstring>
#include <string>

#include "moe_model_generated.h"

namespace moe::tools {

struct ChatFormat {
  fb::ChatTemplate kind;
  const char* name;
  const char* before;  // the text before the user's message
  const char* after;   // and after it
};

inline constexpr ChatFormat kChatFormats[] = {
    {fb::ChatTemplate_ChatML, "chatml", "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"},
    {fb::ChatTemplate_MistralInst, "mistral", "[INST] ", " [/INST]"},
    {fb::ChatTemplate_Granite, "granite", "<|start_of_role|>user<|end_of_role|>",
     "<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"},
    {fb::ChatTemplate_Tulu, "tulu", "<|user|>\n", "\n<|assistant|>\n"},
};

inline const ChatFormat* chat_format(fb::ChatTemplate kind) {
  for (const ChatFormat& f : kChatFormats)
    if (f.kind == kind) return &f;
  return nullptr;
}
inline const ChatFormat* chat_format(const std::string& name) {
  for (const ChatFormat& f : kChatFormats)
    if (name == f.name) return &f;
  return nullptr;
}
inline std::string chat_format_names() {
  std::string s;
  for (const ChatFormat& f : kChatFormats) s.append(s.empty() ? "" : ", ").append(f.name);
  return s;
}

}  // namespace moe::tools
