// EIP-1559 (type 2) transactions, signed here: 0x02 ‖ rlp([chain id, nonce, max priority fee,
// max fee, gas, to, value, data, access list, y parity, r, s]), the signature over
// keccak256(0x02 ‖ rlp(the first nine fields)). The chain id binds it to one chain (EIP-155's
// replay protection, carried into typed transactions).
#pragma once
#include <optional>
#include <string>

#include "registry/quantity.h"
#include "trust/ethereum.h"

namespace bd {

struct Eip1559Transaction {
  uint64_t chain_id = 0, nonce = 0, gas = 0;
  Quantity max_priority_fee{}, max_fee{};  // wei per gas
  std::optional<Address> to;               // none: a contract creation
  Quantity value{};                        // wei
  std::string data;                        // calldata (or init code)
};

// The bytes eth_sendRawTransaction takes.
std::string sign_transaction(const Eip1559Transaction& tx, const PrivateKey& key);

}  // namespace bd
