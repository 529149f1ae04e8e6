#include "trust/ethereum.h"

#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sodium.h>

#include <cryptopp/keccak.h>
#include <cctype>
#include <cstring>

#include "core/error.h"

namespace bd {

namespace {

// One context for the process: libsecp256k1 allows concurrent use of a context for signing and
// verification once it is created (and randomized, against side channels).
const secp256k1_context* context() {
  static const secp256k1_context* ctx = [] {
    secp256k1_context* c =
        secp256k1_context_create(SECP256K1_CONTEXT_SIGN | SECP256K1_CONTEXT_VERIFY);
    if (sodium_init() < 0) fail("libsodium failed to initialise");
    unsigned char seed[32];
    randombytes_buf(seed, sizeof seed);
    if (!secp256k1_context_randomize(c, seed)) fail("secp256k1: context randomization failed");
    return c;
  }();
  return ctx;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// keccak256(uncompressed public key without its 0x04 prefix)[12:32].
Address address_of_public_key(const secp256k1_pubkey& pubkey) {
  unsigned char serialized[65];
  size_t length = sizeof serialized;
  secp256k1_ec_pubkey_serialize(context(), serialized, &length, &pubkey, SECP256K1_EC_UNCOMPRESSED);
  const Hash32 hash =
      keccak256(std::string_view(reinterpret_cast<const char*>(serialized + 1), 64));
  Address address;
  std::memcpy(address.data(), hash.data() + 12, 20);
  return address;
}

std::string_view strip_0x(std::string_view text) {
  return text.size() >= 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X') ? text.substr(2)
                                                                                  : text;
}

}  // namespace

Hash32 keccak256(std::string_view data) {
  Hash32 digest;
  CryptoPP::Keccak_256 hash;
  hash.CalculateDigest(digest.data(), reinterpret_cast<const CryptoPP::byte*>(data.data()),
                       data.size());
  return digest;
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static const char* digits = "0123456789abcdef";
  std::string text;
  text.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    text += digits[b >> 4];
    text += digits[b & 15];
  }
  return text;
}

std::vector<uint8_t> from_hex(std::string_view text) {
  const std::string_view digits = strip_0x(text);
  if (digits.size() % 2) fail("hex ", quote_bytes(text), " has an odd number of digits");
  std::vector<uint8_t> bytes(digits.size() / 2);
  for (size_t i = 0; i < bytes.size(); ++i) {
    const int high = hex_value(digits[2 * i]), low = hex_value(digits[2 * i + 1]);
    if (high < 0 || low < 0) fail("hex ", quote_bytes(text), " has a character that is not hex");
    bytes[i] = uint8_t(high * 16 + low);
  }
  return bytes;
}

std::string checksum_address(const Address& address) {
  const std::string lower = to_hex(address);
  const Hash32 hash = keccak256(lower);
  std::string out = "0x";
  for (size_t i = 0; i < lower.size(); ++i) {
    const int nibble = (hash[i / 2] >> (i % 2 ? 0 : 4)) & 15;
    out += nibble >= 8 ? char(std::toupper(lower[i])) : lower[i];
  }
  return out;
}

Hash32 hash32_from_hex(std::string_view what, std::string_view hex) {
  std::vector<uint8_t> bytes;
  try {
    bytes = from_hex(hex);
  } catch (const Error&) {
  }
  if (bytes.size() != 32) fail(what, " '", hex, "' is not 64 hex digits");
  Hash32 out;
  std::copy(bytes.begin(), bytes.end(), out.begin());
  return out;
}

Address parse_address(std::string_view text) {
  if (text.size() != 42 || text[0] != '0' || text[1] != 'x')
    fail("address ", quote_bytes(text), " is not 0x followed by 40 hex digits");
  const std::vector<uint8_t> bytes = from_hex(text);
  Address address;
  std::memcpy(address.data(), bytes.data(), 20);
  const std::string_view digits = text.substr(2);
  bool lower = false, upper = false;
  for (char c : digits) {
    lower = lower || (c >= 'a' && c <= 'f');
    upper = upper || (c >= 'A' && c <= 'F');
  }
  if (lower && upper && checksum_address(address) != text)
    fail("address ", quote_bytes(text), " fails its EIP-55 checksum (mixed case must be ",
         checksum_address(address), ")");
  return address;
}

void check_private_key(const PrivateKey& key) {
  if (!secp256k1_ec_seckey_verify(context(), key.data()))
    fail("not a valid secp256k1 private key (0 or not below the group order)");
}

PrivateKey new_private_key() {
  context();  // initialises libsodium
  PrivateKey key;
  do randombytes_buf(key.data(), key.size());
  while (!secp256k1_ec_seckey_verify(context(), key.data()));
  return key;
}

Address address_of(const PrivateKey& key) {
  check_private_key(key);
  secp256k1_pubkey pubkey;
  if (!secp256k1_ec_pubkey_create(context(), &pubkey, key.data()))
    fail("secp256k1: cannot derive the public key");
  return address_of_public_key(pubkey);
}

Hash32 personal_message_hash(std::string_view message) {
  std::string prefixed =
      "\x19"
      "Ethereum Signed Message:\n" +
      std::to_string(message.size());
  prefixed.append(message);
  return keccak256(prefixed);
}

Signature65 sign_personal_message(const PrivateKey& key, std::string_view message) {
  Signature65 out = sign_hash(key, personal_message_hash(message));
  out[64] = uint8_t(27 + out[64]);
  return out;
}

Signature65 sign_hash(const PrivateKey& key, const Hash32& hash) {
  check_private_key(key);
  secp256k1_ecdsa_recoverable_signature signature;
  if (!secp256k1_ecdsa_sign_recoverable(context(), &signature, hash.data(), key.data(), nullptr,
                                        nullptr))
    fail("secp256k1: signing failed");
  Signature65 out;
  int recovery_id = 0;
  secp256k1_ecdsa_recoverable_signature_serialize_compact(context(), out.data(), &recovery_id,
                                                          &signature);
  out[64] = uint8_t(recovery_id);
  return out;
}

Address recover_personal_message(std::string_view message, const Signature65& signature) {
  int v = signature[64];
  if (v >= 27) v -= 27;
  if (v != 0 && v != 1) fail("signature: v must be 27 or 28 (or 0 or 1), got ", int(signature[64]));
  secp256k1_ecdsa_recoverable_signature parsed;
  if (!secp256k1_ecdsa_recoverable_signature_parse_compact(context(), &parsed, signature.data(), v))
    fail("signature: r or s is not a valid secp256k1 scalar");
  const Hash32 hash = personal_message_hash(message);
  secp256k1_pubkey pubkey;
  if (!secp256k1_ecdsa_recover(context(), &pubkey, &parsed, hash.data()))
    fail("signature: no public key recovers from it");
  return address_of_public_key(pubkey);
}

Signature65 parse_signature(std::string_view hex) {
  const std::vector<uint8_t> bytes = from_hex(hex);
  if (bytes.size() != 65)
    fail("signature: expected 65 bytes (r, s, v) as 130 hex digits, got ", bytes.size(), " bytes");
  Signature65 out;
  std::memcpy(out.data(), bytes.data(), 65);
  return out;
}

}  // namespace bd
