// Ethereum contract ABI encoding of static values: each value one 32-byte word, as Solidity's
// abi.encode lays them out (unsigned integers and booleans big-endian and left-padded with
// zeros, addresses left-padded, bytes32 as is). What the registry contract hashes
// (contracts/BitDeltaRegistry.sol) and what its callers must hash the same way.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

#include "trust/ethereum.h"

namespace bd {

using AbiWord = std::array<uint8_t, 32>;

AbiWord abi_uint(uint64_t value);
AbiWord abi_bool(bool value);
AbiWord abi_address(const Address& address);
AbiWord abi_bytes32(const Hash32& bytes);

// The words one after the other: abi.encode of static values.
std::string abi_encode(std::initializer_list<AbiWord> words);

}  // namespace bd
