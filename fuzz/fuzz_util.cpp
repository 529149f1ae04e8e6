#include "fuzz_util.h"

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace bd::fuzz {

namespace fs = std::filesystem;

void die(std::string_view what) {
  std::fprintf(stderr, "fuzz target: %.*s\n", int(what.size()), what.data());
  std::abort();
}

void check_error_message(std::string_view message) {
  if (message.size() > kMaxErrorMessage)
    die("bd::Error message longer than kMaxErrorMessage (" + std::to_string(message.size()) +
        " characters): " + escape_bytes(message, 4 * kMaxErrorMessage));
  for (const char c : message)
    if (c < 0x20 || c > 0x7e)
      die("bd::Error message with a byte outside printable ASCII: " +
          escape_bytes(message, 4 * kMaxErrorMessage));
}

uint64_t sum_bytes(const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  uint64_t sum = 0;
  for (size_t i = 0; i < size; ++i) sum += bytes[i];
  return sum;
}

namespace {

std::string scratch_root() {
  if (const char* tmp = std::getenv("TMPDIR"); tmp && *tmp) return tmp;
  std::error_code error;
  return fs::is_directory("/dev/shm", error) ? "/dev/shm" : "/tmp";
}

}  // namespace

Scratch& Scratch::get() {
  static Scratch scratch;
  return scratch;
}

Scratch::Scratch() {
  std::string name = scratch_root() + "/bitdelta_fuzz_XXXXXX";
  if (!::mkdtemp(name.data())) die("mkdtemp failed for " + name);
  path_ = name;
}

Scratch::~Scratch() {
  std::error_code error;
  fs::remove_all(path_, error);
}

void Scratch::clear() {
  for (const auto& entry : fs::directory_iterator(path_)) fs::remove_all(entry.path());
}

std::string Scratch::write(const std::string& name, std::string_view bytes) {
  const std::string file = path_ + "/" + name;
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out.flush()) die("cannot write " + file);
  return file;
}

std::vector<std::string_view> split_parts(std::string_view input) {
  std::vector<std::string_view> parts;
  for (size_t at = input.find(kSeparator); at != std::string_view::npos;
       at = input.find(kSeparator)) {
    parts.push_back(input.substr(0, at));
    input.remove_prefix(at + kSeparator.size());
  }
  parts.push_back(input);
  return parts;
}

}  // namespace bd::fuzz
