#include "registry/rlp.h"

#include <cstdint>

namespace bd {

namespace {

// The prefix for a payload of `length` bytes: offset + length when under 56, else
// offset + 55 + the length's own byte count, then the length big-endian.
std::string prefix(uint8_t offset, size_t length) {
  if (length < 56) return std::string(1, char(offset + length));
  std::string digits;
  for (size_t rest = length; rest > 0; rest >>= 8) digits.insert(digits.begin(), char(rest & 0xff));
  return std::string(1, char(offset + 55 + digits.size())) + digits;
}

}  // namespace

std::string rlp_string(std::string_view bytes) {
  if (bytes.size() == 1 && uint8_t(bytes[0]) < 0x80) return std::string(bytes);
  return prefix(0x80, bytes.size()) + std::string(bytes);
}

std::string rlp_list(const std::vector<std::string>& encoded_items) {
  std::string payload;
  for (const std::string& item : encoded_items) payload += item;
  return prefix(0xc0, payload.size()) + payload;
}

}  // namespace bd
