#include "serve/api_keys.h"

#include <sodium.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/adapter.h"

namespace bd {

namespace {

std::array<unsigned char, 32> digest_of(const std::string& key) {
  std::array<unsigned char, 32> digest;
  crypto_hash_sha256(digest.data(), reinterpret_cast<const unsigned char*>(key.data()), key.size());
  return digest;
}

}  // namespace

ApiKeys::ApiKeys(const std::string& path) {
  if (sodium_init() < 0) fail("libsodium failed to initialise");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read the API key file ", path);
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text.str());
  } catch (const std::exception& e) {
    fail(path, ": not JSON (", e.what(), ")");
  }
  if (!json.is_object() || !json.contains("keys") || !json["keys"].is_array() ||
      json["keys"].empty())
    fail(path,
         ": expected {\"keys\": [{\"key\": ..., \"owner\": ...} or {\"key\": ..., "
         "\"admin\": true}, ...]}");
  for (size_t i = 0; i < json["keys"].size(); ++i) {
    const nlohmann::json& entry = json["keys"][i];
    const std::string where = cat(path, ": keys[", i, "]");
    if (!entry.is_object() || !entry.contains("key") || !entry["key"].is_string())
      fail(where, " has no \"key\" string");
    const std::string key = entry["key"];
    if (key.size() < 16) fail(where, ": a key needs at least 16 characters");
    KeyHolder holder;
    if (entry.contains("admin")) {
      if (!entry["admin"].is_boolean()) fail(where, ": \"admin\" must be true or false");
      holder.admin = entry["admin"];
    }
    if (entry.contains("owner")) {
      if (!entry["owner"].is_string() || !valid_owner_did(entry["owner"]))
        fail(where, ": \"owner\" must be a did:lux identity");
      holder.owner = entry["owner"];
    }
    if (!holder.admin && holder.owner.empty())
      fail(where, " needs an \"owner\" or \"admin\": true");
    const std::array<unsigned char, 32> digest = digest_of(key);
    for (const Entry& other : entries_)
      if (other.digest == digest) fail(where, " repeats an earlier key");
    entries_.push_back(Entry{digest, holder});
  }
}

std::optional<KeyHolder> ApiKeys::find(const std::string& key) const {
  const std::array<unsigned char, 32> digest = digest_of(key);
  const Entry* found = nullptr;
  for (const Entry& entry : entries_)
    if (crypto_verify_32(entry.digest.data(), digest.data()) == 0) found = &entry;
  if (!found) return std::nullopt;
  return found->holder;
}

}  // namespace bd
