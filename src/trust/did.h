// did:lux identities: did:lux:<chain id>:0x<40 hex>, an account on an EVM chain of the Lux
// network, owned by whoever holds its secp256k1 key (ownership is proved by signing with it,
// trust/ethereum.h). A key file holds the private key of one identity.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "trust/ethereum.h"

namespace bd {

struct LuxDid {
  uint64_t chain_id = 0;
  Address address{};
  std::string str() const;  // did:lux:<chain id>:<EIP-55 address>
};

// Parses and validates a did:lux: the method, a decimal chain id (1 to 2^64 − 1, no sign or
// leading zeros) and an address (mixed case must be its EIP-55 checksum). Throws bd::Error.
LuxDid parse_lux_did(std::string_view text);

// The key file of `bitdelta id new`: JSON with "kind": "bitdelta-secp256k1-key", the private key
// in hex, and the identity it gives (checked against the key when read).
struct KeyFile {
  PrivateKey key{};
  LuxDid did;
};
// Writes a new key file readable by its owner only (mode 0600); never overwrites a file.
void write_key_file(const std::string& path, const KeyFile& key_file);
KeyFile read_key_file(const std::string& path);

}  // namespace bd
