// Errors: one exception type whose message is the single line the CLI prints.
#pragma once
#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace bd {

// Longest message an Error carries (longer ones are cut, ending in "..."), and the most bytes of
// file content that quote_bytes() shows.
inline constexpr size_t kMaxErrorMessage = 1000;
inline constexpr size_t kMaxQuotedBytes = 80;

// `text` made safe for one terminal line: printable ASCII stays, every other byte (control
// characters, newlines, bytes of UTF-8 or invalid UTF-8) becomes \xNN; the escaped text is cut at
// `max_chars`, ending in "...". Escaping twice changes nothing, so content quoted inside a message
// stays as it was when the message becomes an Error.
std::string escape_bytes(std::string_view text, size_t max_chars);

// File content (a tensor name, a metadata value, a token) for an error message: escaped as
// above, at most kMaxQuotedBytes bytes of it shown, in single quotes.
std::string quote_bytes(std::string_view content);

// Every message passes through escape_bytes(message, kMaxErrorMessage), so no file can put
// control characters, invalid UTF-8 or an unbounded line on the user's terminal.
struct Error : std::runtime_error {
  explicit Error(const std::string& message)
      : std::runtime_error(escape_bytes(message, kMaxErrorMessage)) {}
};

// Concatenates its arguments with operator<< into one message.
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

// Throws bd::Error with the concatenated message, e.g. fail(path, ": bad header size ", n).
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(cat(parts...));
}

// Prints "warning: <message>" as one escaped line on stderr: for what the user should know but
// that does not stop the job (e.g. a file read through a slower path).
void warn_line(const std::string& message);
template <typename... Parts>
void warn(const Parts&... parts) {
  warn_line(cat(parts...));
}

}  // namespace bd
