// API keys of a server started with --api-keys FILE. The file is JSON:
//
//   {"keys": [{"key": "sk-alice-...", "owner": "did:lux:alice"},
//             {"key": "sk-ops-...", "admin": true}]}
//
// A key belongs to one owner (a did:lux identity, matched against the adapters' owner field) or
// is an admin key. Keys are kept only as SHA-256 digests and compared in constant time: every
// lookup hashes the presented key and compares it with every stored digest (crypto_verify_32),
// so neither timing nor an early exit tells which prefix matched.
#pragma once
#include <array>
#include <optional>
#include <string>
#include <vector>

namespace bd {

struct KeyHolder {
  std::string owner;  // empty for an admin key
  bool admin = false;
};

class ApiKeys {
 public:
  // Throws bd::Error naming the file for anything malformed (no keys, a key shorter than 16
  // characters, a duplicate, an entry with neither owner nor admin).
  explicit ApiKeys(const std::string& path);
  // The holder of `key`, or nothing.
  std::optional<KeyHolder> find(const std::string& key) const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::array<unsigned char, 32> digest;
    KeyHolder holder;
  };
  std::vector<Entry> entries_;
};

}  // namespace bd
