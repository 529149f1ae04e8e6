#include "registry/quantity.h"

#include <algorithm>

#include "core/error.h"

namespace bd {

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Quantity quantity_from_hex(std::string_view hex) {
  if (hex.size() < 3 || hex[0] != '0' || (hex[1] != 'x' && hex[1] != 'X') || hex.size() > 66)
    fail("'", hex, "' is not a hex quantity (0x followed by 1 to 64 hex digits)");
  Quantity q{};
  size_t nibble = 0;  // from the least significant end
  for (size_t i = hex.size(); i-- > 2; ++nibble) {
    const int d = hex_digit(hex[i]);
    if (d < 0) fail("'", hex, "' is not a hex quantity");
    q[31 - nibble / 2] |= uint8_t(nibble % 2 ? d << 4 : d);
  }
  return q;
}

std::string quantity_hex(const Quantity& q) {
  const std::string digits = to_hex(q);
  const size_t first = digits.find_first_not_of('0');
  return "0x" + (first == std::string::npos ? "0" : digits.substr(first));
}

Quantity quantity_times(const Quantity& a, uint32_t factor) {
  Quantity out{};
  uint64_t carry = 0;
  for (size_t i = 32; i-- > 0;) {
    const uint64_t v = uint64_t(a[i]) * factor + carry;
    out[i] = uint8_t(v);
    carry = v >> 8;
  }
  if (carry) fail("quantity overflow (more than 2^256 - 1)");
  return out;
}

Quantity quantity_add(const Quantity& a, const Quantity& b) {
  Quantity out{};
  unsigned carry = 0;
  for (size_t i = 32; i-- > 0;) {
    const unsigned v = unsigned(a[i]) + b[i] + carry;
    out[i] = uint8_t(v);
    carry = v >> 8;
  }
  if (carry) fail("quantity overflow (more than 2^256 - 1)");
  return out;
}

Quantity quantity_from_decimal(std::string_view digits) {
  if (digits.empty() || digits.size() > 78)
    fail("'", digits, "' is not a whole number of wei (1 to 78 decimal digits)");
  Quantity q{};
  for (char c : digits) {
    if (c < '0' || c > '9') fail("'", digits, "' is not a whole number of wei");
    q = quantity_add(quantity_times(q, 10), abi_uint(uint64_t(c - '0')));
  }
  return q;
}

std::string quantity_decimal(const Quantity& q) {
  Quantity rest = q;
  std::string digits;
  while (!quantity_is_zero(rest)) {  // divide by 10, collect the remainders
    unsigned remainder = 0;
    for (size_t i = 0; i < 32; ++i) {
      const unsigned v = remainder * 256 + rest[i];
      rest[i] = uint8_t(v / 10);
      remainder = v % 10;
    }
    digits.push_back(char('0' + remainder));
  }
  if (digits.empty()) return "0";
  std::reverse(digits.begin(), digits.end());
  return digits;
}

bool quantity_is_zero(const Quantity& q) {
  return std::all_of(q.begin(), q.end(), [](uint8_t b) { return b == 0; });
}

std::string quantity_minimal_bytes(const Quantity& q) {
  size_t first = 0;
  while (first < 32 && q[first] == 0) ++first;
  return std::string(reinterpret_cast<const char*>(q.data()) + first, 32 - first);
}

}  // namespace bd
