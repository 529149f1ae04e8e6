// Errors: one exception type whose message is the single line the CLI prints.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace bd {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
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

}  // namespace bd
