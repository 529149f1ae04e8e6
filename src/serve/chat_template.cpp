#include "serve/chat_template.h"

#include "core/error.h"

namespace bd {

std::string apply_chat_template(const std::vector<ChatMessage>& messages) {
  if (messages.empty()) fail("messages must hold at least one message");
  std::string prompt;
  for (const ChatMessage& m : messages) {
    if (m.role == "system")
      prompt += "System: ";
    else if (m.role == "user")
      prompt += "User: ";
    else if (m.role == "assistant")
      prompt += "Assistant: ";
    else
      fail("unknown message role ", quote_bytes(m.role), " (system, user or assistant)");
    prompt += m.content;
    prompt += "\n";
  }
  return prompt + "Assistant:";
}

}  // namespace bd
