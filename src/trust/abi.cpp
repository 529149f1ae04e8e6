#include "trust/abi.h"

#include <algorithm>

namespace bd {

AbiWord abi_uint(uint64_t value) {
  AbiWord word{};
  for (int i = 0; i < 8; ++i) word[size_t(31 - i)] = uint8_t(value >> (8 * i));
  return word;
}

AbiWord abi_bool(bool value) {
  return abi_uint(value ? 1 : 0);
}

AbiWord abi_address(const Address& address) {
  AbiWord word{};
  std::copy(address.begin(), address.end(), word.begin() + 12);
  return word;
}

AbiWord abi_bytes32(const Hash32& bytes) {
  return bytes;
}

std::string abi_encode(std::initializer_list<AbiWord> words) {
  std::string out;
  for (const AbiWord& word : words) out.append(reinterpret_cast<const char*>(word.data()), 32);
  return out;
}

}  // namespace bd
