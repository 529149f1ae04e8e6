// SHA-256 (libsodium), incremental, for model fingerprints and content hashes.
#pragma once
#include <sodium.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace bd {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view text) { update(text.data(), text.size()); }
  std::string hex_digest();  // 64 lowercase hex characters; call once

 private:
  crypto_hash_sha256_state state_;
};

}  // namespace bd
