// Ethereum's primitives for identities and signatures: Keccak-256 (Crypto++), secp256k1 keys and
// recoverable ECDSA signatures (libsecp256k1), addresses with the EIP-55 checksum, and EIP-191
// personal messages (what `personal_sign` and Solidity's `ecrecover` of a prefixed hash check).
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bd {

using Hash32 = std::array<uint8_t, 32>;
using Address = std::array<uint8_t, 20>;
using PrivateKey = std::array<uint8_t, 32>;
using Signature65 = std::array<uint8_t, 65>;  // r (32) ‖ s (32) ‖ v (27 or 28)

// Keccak-256 as Ethereum uses it (the original Keccak padding, not SHA3-256's).
Hash32 keccak256(std::string_view data);

// Lower-case hex without a prefix, and back (an optional "0x"; throws bd::Error on anything but
// an even number of hex digits).
std::string to_hex(std::span<const uint8_t> bytes);
std::vector<uint8_t> from_hex(std::string_view text);
// 64 hex digits (an optional "0x") as 32 bytes, e.g. a fingerprint; throws bd::Error naming
// `what` otherwise.
Hash32 hash32_from_hex(std::string_view what, std::string_view hex);

// "0x" + 40 hex digits in EIP-55 mixed case (the checksum: a hex letter is upper case where the
// matching nibble of keccak256(lower-case hex) is ≥ 8).
std::string checksum_address(const Address& address);
// Parses "0x" + 40 hex digits. All-lower or all-upper case is accepted as is; mixed case must be
// the EIP-55 checksum (a mistyped letter then fails). Throws bd::Error saying what is wrong.
Address parse_address(std::string_view text);

// A new private key from libsodium's CSPRNG (retried until it is a valid secp256k1 scalar).
PrivateKey new_private_key();
// Throws unless the 32 bytes are a valid key (0 < key < the group order).
void check_private_key(const PrivateKey& key);
// keccak256(uncompressed public key without its 0x04 prefix)[12:].
Address address_of(const PrivateKey& key);

// EIP-191 version 0x45: keccak256("\x19Ethereum Signed Message:\n" + decimal length + message).
Hash32 personal_message_hash(std::string_view message);
// Deterministic (RFC 6979) low-s recoverable signature of personal_message_hash(message): the
// same bytes ethers' Wallet.signMessage gives.
Signature65 sign_personal_message(const PrivateKey& key, std::string_view message);
// Deterministic low-s recoverable signature of a 32-byte hash as is (transactions sign their
// own hash): v is the recovery id, 0 or 1.
Signature65 sign_hash(const PrivateKey& key, const Hash32& hash);
// The address that signed `message` (v of 27/28, or 0/1); throws bd::Error when the signature
// is malformed or recovers no key.
Address recover_personal_message(std::string_view message, const Signature65& signature);
Signature65 parse_signature(std::string_view hex);  // "0x" + 130 hex digits

}  // namespace bd
