// The Ethereum contract ABI (docs.soliditylang.org, "Contract ABI Specification"): types parsed
// from their canonical text ("uint256", "bytes32[]", "(address,bytes)"), values encoded as
// abi.encode lays them out (a head of 32-byte words, offsets to the tails of dynamic values) and
// decoded back, function selectors and event topics. What the registry contract hashes and
// what `bitdelta registry` sends it and reads back (contracts/BitDeltaRegistry.sol).
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "trust/ethereum.h"

namespace bd {

using AbiWord = std::array<uint8_t, 32>;

struct AbiType {
  enum class Kind { uint, boolean, address, fixed_bytes, bytes, string, array, tuple };
  Kind kind = Kind::uint;
  int size = 256;                 // uint bits; fixed_bytes length
  std::vector<AbiType> items;     // array: one element type; tuple: the members
  bool dynamic() const;           // has a tail (bytes, string, T[], a tuple holding one)
  std::string canonical() const;  // the text signatures and selectors use
};
// "uint8" … "uint256", "bool", "address", "bytes1" … "bytes32", "bytes", "string", "T[]", and
// "(T1,T2,…)"; throws bd::Error on anything else (signed ints and fixed-size arrays are not
// used by the registry and are refused).
AbiType parse_abi_type(std::string_view text);

// A value of some type: a word for uint/bool/address/fixed bytes (as laid out: big-endian,
// left-padded numbers and addresses, right-padded fixed bytes), raw bytes for bytes and string,
// items for arrays and tuples.
struct AbiValue {
  AbiWord word{};
  std::string bytes;
  std::vector<AbiValue> items;
};

AbiWord abi_uint(uint64_t value);
AbiWord abi_bool(bool value);
AbiWord abi_address(const Address& address);
AbiWord abi_bytes32(const Hash32& bytes);
AbiValue abi_word(const AbiWord& word);
AbiValue abi_bytes(std::string bytes);
AbiValue abi_list(std::vector<AbiValue> items);

// abi.encode of static words, one after the other.
std::string abi_encode(std::initializer_list<AbiWord> words);
// abi.encode(value) of a tuple type (a function's arguments, a view's results); throws when the
// value's shape does not match the type.
std::string abi_encode(const AbiType& tuple, const AbiValue& value);
// The inverse, checking every offset and length against `data`; throws bd::Error when the data
// is too short or malformed, or would decode to far more than its size (heads sharing tails).
AbiValue abi_decode(const AbiType& tuple, std::string_view data);

// keccak256(signature)[0:4], e.g. of "withdraw()"; calldata = selector ‖ abi_encode(arguments).
std::string function_selector(std::string_view signature);
// keccak256(signature): an event's topic 0.
Hash32 event_topic(std::string_view signature);

// Word helpers: the low 64 bits of a uint word (throws if larger), the address of a word,
// a word's bool.
uint64_t abi_to_uint64(const AbiWord& word);
Address abi_to_address(const AbiWord& word);

}  // namespace bd
