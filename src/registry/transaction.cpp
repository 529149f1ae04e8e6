#include "registry/transaction.h"

#include <vector>

#include "registry/rlp.h"

namespace bd {

namespace {

std::string rlp_uint(uint64_t value) {
  return rlp_string(quantity_minimal_bytes(abi_uint(value)));
}
std::string rlp_quantity(const Quantity& q) {
  return rlp_string(quantity_minimal_bytes(q));
}

std::vector<std::string> unsigned_fields(const Eip1559Transaction& tx) {
  const std::string to =
      tx.to ? std::string(reinterpret_cast<const char*>(tx.to->data()), tx.to->size()) : "";
  return {rlp_uint(tx.chain_id),    rlp_uint(tx.nonce),  rlp_quantity(tx.max_priority_fee),
          rlp_quantity(tx.max_fee), rlp_uint(tx.gas),    rlp_string(to),
          rlp_quantity(tx.value),   rlp_string(tx.data), rlp_list({})};  // no access list
}

}  // namespace

std::string sign_transaction(const Eip1559Transaction& tx, const PrivateKey& key) {
  std::vector<std::string> fields = unsigned_fields(tx);
  const Signature65 signature = sign_hash(key, keccak256("\x02" + rlp_list(fields)));
  auto scalar = [&](size_t from) {  // r or s, as an integer without leading zeros
    Quantity word;
    std::copy(signature.begin() + long(from), signature.begin() + long(from) + 32, word.begin());
    return rlp_quantity(word);
  };
  fields.push_back(rlp_uint(signature[64]));  // y parity: the recovery id, 0 or 1
  fields.push_back(scalar(0));
  fields.push_back(scalar(32));
  return "\x02" + rlp_list(fields);
}

}  // namespace bd
