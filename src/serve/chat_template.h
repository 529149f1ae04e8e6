// The chat template: how /v1/chat/completions turns messages into one prompt. The embedded
// default model and the bundled users were trained on plain text, so the template is plain text
// too, one line per message and an open assistant line for the reply (docs/serving.md):
//
//   System: You are terse.\n
//   User: Tell me a joke.\n
//   Assistant:
//
// The tokenizer adds its special tokens (BOS) in front. Generation stops at the next "\nUser:"
// (added to the request's stop strings), so the reply is one assistant turn.
#pragma once
#include <string>
#include <vector>

namespace bd {

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
};

// Throws bd::Error for an empty list or an unknown role.
std::string apply_chat_template(const std::vector<ChatMessage>& messages);

inline constexpr const char* kChatTurnStop = "\nUser:";

}  // namespace bd
