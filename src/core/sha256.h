// SHA-256, incremental, for model fingerprints and content hashes. OpenSSL's implementation:
// it uses the CPU's SHA extensions where present (about 2 GB/s per core on x86 with SHA-NI,
// 4x libsodium's portable code), which bounds how fast a model can be fingerprinted.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace bd {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, size_t size);
  void update(std::string_view text) { update(text.data(), text.size()); }
  std::string hex_digest();  // 64 lowercase hex characters; call once

 private:
  evp_md_ctx_st* context_;
};

}  // namespace bd
