#include "trust/did.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"

namespace bd {

namespace {

constexpr const char* kKeyKind = "bitdelta-secp256k1-key";

}  // namespace

std::string LuxDid::str() const {
  return "did:lux:" + std::to_string(chain_id) + ":" + checksum_address(address);
}

LuxDid parse_lux_did(std::string_view text) {
  constexpr std::string_view kPrefix = "did:lux:";
  if (text.substr(0, kPrefix.size()) != kPrefix)
    fail("identity ", quote_bytes(text), " is not a did:lux (did:lux:<chain id>:0x<40 hex>)");
  const std::string_view rest = text.substr(kPrefix.size());
  const size_t colon = rest.find(':');
  if (colon == std::string_view::npos)
    fail("identity ", quote_bytes(text), " has no address (did:lux:<chain id>:0x<40 hex>)");
  const std::string_view chain = rest.substr(0, colon);
  if (chain.empty() || chain.size() > 20 || chain[0] == '0' ||
      chain.find_first_not_of("0123456789") != std::string_view::npos)
    fail("identity ", quote_bytes(text), ": the chain id must be a positive decimal number");
  LuxDid did;
  for (char c : chain) {
    const uint64_t digit = uint64_t(c - '0');
    if (did.chain_id > (UINT64_MAX - digit) / 10)
      fail("identity ", quote_bytes(text), ": the chain id does not fit in 64 bits");
    did.chain_id = did.chain_id * 10 + digit;
  }
  did.address = parse_address(rest.substr(colon + 1));
  return did;
}

void write_key_file(const std::string& path, const KeyFile& key_file) {
  const std::string private_hex = "0x" + to_hex(key_file.key);
  const nlohmann::ordered_json out = {{"kind", kKeyKind},
                                      {"did", key_file.did.str()},
                                      {"address", checksum_address(key_file.did.address)},
                                      {"private_key", private_hex}};
  write_new_private_file(path, out.dump(2) + "\n");
}

KeyFile read_key_file(const std::string& path) {
  nlohmann::json in;
  try {
    in = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception&) {
    fail(path, " is not a key file (not JSON)");
  }
  if (!in.is_object() || in.value("kind", "") != kKeyKind || !in["private_key"].is_string() ||
      !in["did"].is_string())
    fail(path, " is not a bitdelta key file (kind ", kKeyKind, ")");
  const std::vector<uint8_t> bytes = from_hex(in["private_key"].get<std::string>());
  if (bytes.size() != 32) fail(path, ": the private key must be 32 bytes");
  KeyFile key_file;
  std::memcpy(key_file.key.data(), bytes.data(), 32);
  key_file.did = parse_lux_did(in["did"].get<std::string>());
  if (address_of(key_file.key) != key_file.did.address)
    fail(path, ": the private key does not belong to ", key_file.did.str());
  return key_file;
}

}  // namespace bd
