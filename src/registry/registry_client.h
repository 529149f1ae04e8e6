// A client of the BitDeltaRegistry contract (contracts/BitDeltaRegistry.sol) on any EVM node:
// transactions built (ABI calldata), signed (EIP-1559, secp256k1) and sent here, views called,
// events read back. What `bitdelta registry` runs (docs/registry.md).
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "registry/json_rpc.h"
#include "registry/quantity.h"
#include "trust/abi.h"
#include "trust/attestation.h"

namespace bd {

struct Receipt {
  std::string transaction_hash;  // 0x…
  uint64_t block = 0, gas_used = 0;
  std::optional<Address> contract;  // a deployment's new contract
  nlohmann::json logs;              // as the node gave them
};

struct RegistryDelta {
  Hash32 delta_hash{}, base_hash{}, measurement{};
  Address owner{}, attester{};
  uint32_t compression_ratio_x100 = 0;
  bool is_public = false;
  uint64_t epsilon_x1e6 = 0, published_at = 0;
  uint8_t delta_exponent = 0;
};

struct RegistrySoup {
  uint64_t id = 0, version = 0, created_at = 0;
  Hash32 adapter_hash{}, record_hash{};
  std::string method;
  Address aggregator{};
  bool active = false;
  Quantity royalties_paid{};
  std::vector<Hash32> delta_hashes;
  std::vector<Address> contributors;
  std::vector<uint16_t> weights_bps;
};

class RegistryClient {
 public:
  RegistryClient(std::string rpc_url, std::optional<Address> contract);

  // Sends a transaction from `key` and waits for its receipt; throws with the revert reason
  // when the node refuses it or it reverts.
  Receipt transact(const PrivateKey& key, const std::string& calldata, const Quantity& value = {});
  Receipt deploy(const PrivateKey& key, const std::string& init_code);

  Receipt publish(const PrivateKey& key, const Address& owner, const Hash32& base,
                  const Hash32& delta, uint32_t ratio_x100, bool make_public,
                  const ChainAttestation& attestation, const Signature65& attestation_signature);
  Receipt create_soup(const PrivateKey& key, const Hash32& adapter,
                      const std::vector<Hash32>& deltas, const std::vector<Address>& contributors,
                      const std::vector<uint16_t>& weights_bps, const std::string& method,
                      const Hash32& record);
  Receipt set_role(const PrivateKey& key, const std::string& role, const Address& who,
                   bool allowed);  // role: attester | aggregator
  Receipt pay_royalties(const PrivateKey& key, uint64_t soup, const Quantity& wei);
  Receipt withdraw(const PrivateKey& key);

  RegistryDelta delta(const Hash32& delta_hash) const;
  std::vector<Hash32> deltas_of(const Address& owner) const;
  uint64_t soup_count() const;
  RegistrySoup soup(uint64_t id) const;
  Quantity credits(const Address& who) const;
  // The deltas published (DeltaPublished events) and soups created, oldest first.
  std::vector<Hash32> published_deltas() const;

  const JsonRpc& rpc() const { return rpc_; }

 private:
  std::string call(const std::string& calldata) const;  // eth_call's result bytes
  const Address& contract() const;

  JsonRpc rpc_;
  std::optional<Address> contract_;
};

// Calldata: the selector of `signature` ("name(types)") and the encoded arguments.
std::string calldata(const std::string& signature, const AbiValue& arguments);

}  // namespace bd
