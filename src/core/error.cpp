#include "core/error.h"

#include <cstdio>

namespace bd {

std::string escape_bytes(std::string_view text, size_t max_chars) {
  static const char kHex[] = "0123456789abcdef";
  const std::string ellipsis = "...";
  std::string out;
  // The longest prefix, cut between escapes, that still leaves room for the ellipsis.
  size_t cut = 0;
  for (const char c : text) {
    const unsigned char byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f)
      out += c;
    else
      out += {'\\', 'x', kHex[byte >> 4], kHex[byte & 15]};
    if (out.size() + ellipsis.size() <= max_chars) cut = out.size();
    if (out.size() > max_chars) break;
  }
  if (out.size() <= max_chars) return out;
  out.resize(cut);
  return out + ellipsis.substr(0, max_chars - cut);
}

void warn_line(const std::string& message) {
  std::fprintf(stderr, "warning: %s\n", escape_bytes(message, kMaxErrorMessage).c_str());
}

std::string quote_bytes(std::string_view content) {
  const bool cut = content.size() > kMaxQuotedBytes;
  const std::string shown = escape_bytes(content.substr(0, kMaxQuotedBytes), 4 * kMaxQuotedBytes);
  return "'" + shown + (cut ? "'..." : "'");
}

}  // namespace bd
