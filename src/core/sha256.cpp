#include "core/sha256.h"

#include "core/error.h"

namespace bd {

Sha256::Sha256() {
  if (sodium_init() < 0) fail("libsodium failed to initialise");
  crypto_hash_sha256_init(&state_);
}

void Sha256::update(const void* data, size_t size) {
  crypto_hash_sha256_update(&state_, static_cast<const unsigned char*>(data), size);
}

std::string Sha256::hex_digest() {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&state_, digest);
  char hex[2 * crypto_hash_sha256_BYTES + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return hex;
}

}  // namespace bd
