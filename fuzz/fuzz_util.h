// What the libFuzzer targets in fuzz/ share: the rule that bd::Error is the only acceptable way to
// refuse an input (and that its message is one bounded, printable line), a scratch folder for the
// readers that take a path, and the separator that cuts one input into several files.
#pragma once
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include "core/error.h"

namespace bd::fuzz {

// Prints `what` to stderr and aborts, which libFuzzer reports as a crash with the input saved.
[[noreturn]] void die(std::string_view what);

// Aborts unless `message` (a caught bd::Error's) is at most kMaxErrorMessage characters of
// printable ASCII: errors quote file content, and a hostile file must not reach the terminal.
void check_error_message(std::string_view message);

// Runs `body` and says whether it refused the input. A bd::Error is the expected refusal: its
// message is checked (and kept in `*message` if given). Any other exception aborts, naming its
// type and message; crashes and sanitizer reports abort on their own.
template <typename Body>
bool refused(Body&& body, std::string* message = nullptr) {
  try {
    body();
    return false;
  } catch (const Error& error) {
    check_error_message(error.what());
    if (message) *message = error.what();
    return true;
  } catch (const std::exception& error) {
    die(std::string("an exception other than bd::Error: ") + typeid(error).name() + ": " +
        error.what());
  } catch (...) {
    die("an exception that is not a std::exception");
  }
}

// The sum of `size` bytes, so that every byte of a tensor view is read (an out-of-bounds view then
// faults or is reported by ASan where the bytes live on the heap).
uint64_t sum_bytes(const void* data, size_t size);

// One folder per fuzzing process under $TMPDIR (else /dev/shm, else /tmp), emptied before each
// input and removed at exit: the readers under test take paths and mmap them.
class Scratch {
 public:
  static Scratch& get();
  // Removes every file written for the previous input.
  void clear();
  // Writes `bytes` to <folder>/<name> and returns the path.
  std::string write(const std::string& name, std::string_view bytes);
  const std::string& path() const { return path_; }

 private:
  Scratch();
  ~Scratch();
  std::string path_;
};

// Inputs that hold several files: the parts between separator lines, in order (so n separators
// give n + 1 parts). Chosen to be short enough for mutations to create and remove, and unlikely
// inside JSON or small tensors; fuzz/*.dict lists it so libFuzzer inserts it whole.
inline constexpr std::string_view kSeparator = "\n--8<--\n";
std::vector<std::string_view> split_parts(std::string_view input);

// File content (a tensor name, a text) for the diagnostic of a finding: escaped, in quotes.
inline std::string shown(std::string_view content) {
  return "'" + escape_bytes(content, 2000) + "'";
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace bd::fuzz
