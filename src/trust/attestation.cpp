#include "trust/attestation.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/sha256.h"
#include "core/utc_time.h"
#include "io/adapter.h"
#include "trust/abi.h"

namespace bd {

namespace {

constexpr const char* kKind = "bitdelta-attestation-1";
constexpr const char* kEd25519KeyKind = "bitdelta-ed25519-key";

void init_sodium() {
  if (sodium_init() < 0) fail("libsodium failed to initialise");
}

std::string sha256_hex(std::string_view bytes) {
  Sha256 hash;
  hash.update(bytes);
  return hash.hex_digest();
}

std::string file_sha256(const std::string& path) {
  const MappedFile file(path);
  Sha256 hash;
  hash.update(file.data(), file.size());
  return hash.hex_digest();
}

bool is_hex(const std::string& text, size_t digits) {
  return text.size() == digits && std::all_of(text.begin(), text.end(), [](char c) {
           return std::isxdigit(c) && !std::isupper(c);
         });
}

std::vector<std::string> content_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    line.erase(0, line.find_first_not_of(" \t\r"));
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

class Ed25519Verifier : public PlatformVerifier {
 public:
  void verify_signature(const Attestation& a, const TrustedKeys& trusted) const override {
    const bool known = std::any_of(trusted.keys.begin(), trusted.keys.end(), [&](const auto& k) {
      return k.first == "sim-ed25519" && k.second == a.signer;
    });
    if (!known) fail("the signer's key ", a.signer, " is not among the trusted sim-ed25519 keys");
    const std::vector<uint8_t> key = from_hex(a.signer), signature = from_hex(a.signature);
    if (key.size() != crypto_sign_PUBLICKEYBYTES || signature.size() != crypto_sign_BYTES)
      fail("the sim-ed25519 key or signature has the wrong length");
    const std::string payload = attestation_payload(a);
    init_sodium();
    if (crypto_sign_verify_detached(signature.data(),
                                    reinterpret_cast<const unsigned char*>(payload.data()),
                                    payload.size(), key.data()) != 0)
      fail(
          "the signature does not match the attested fields (something was changed, or another "
          "key signed)");
  }
};

class Eip191Verifier : public PlatformVerifier {
 public:
  void verify_signature(const Attestation& a, const TrustedKeys& trusted) const override {
    const LuxDid did = parse_lux_did(a.signer);
    const bool known = std::any_of(trusted.keys.begin(), trusted.keys.end(), [&](const auto& k) {
      return k.first == "sim-eip191" && k.second == did.str();
    });
    if (!known) fail("the signer ", did.str(), " is not among the trusted sim-eip191 identities");
    const Hash32 digest = attestation_digest(chain_attestation(a));
    const Address signer = recover_personal_message(
        std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()),
        parse_signature(a.signature));
    if (signer != did.address)
      fail("the signature does not match the attested fields (it recovers to ",
           checksum_address(signer), ", not the signer)");
  }
};

}  // namespace

std::string attestation_payload(const Attestation& a) {
  nlohmann::json payload = {
      {"kind", kKind},        {"platform", a.platform},   {"measurement", a.measurement},
      {"adapter", a.adapter}, {"base", a.base},           {"owner", a.owner},
      {"privacy", a.privacy}, {"issued_at", a.issued_at}, {"nonce", a.nonce},
      {"signer", a.signer}};
  return payload.dump();  // nlohmann::json keeps keys sorted: one canonical text
}

namespace {

// A privacy.* value of the attested record as a finite non-negative number, if present.
std::optional<double> privacy_number(const nlohmann::json& privacy, const char* key) {
  if (!privacy.is_object() || !privacy.contains(key)) return std::nullopt;
  const nlohmann::json& value = privacy[key];
  const std::string text = value.is_string() ? value.get<std::string>() : value.dump();
  char* end = nullptr;
  const double number = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !std::isfinite(number) || number < 0)
    fail("the attested ", key, " '", text, "' is not a non-negative number");
  return number;
}

}  // namespace

ChainAttestation chain_attestation(const Attestation& a) {
  ChainAttestation c;
  c.payload_hash = keccak256(attestation_payload(a));
  c.adapter = hash32_from_hex("the attestation's adapter fingerprint", a.adapter);
  c.base = hash32_from_hex("the attestation's base fingerprint", a.base);
  c.measurement = hash32_from_hex("the attestation's measurement", a.measurement);
  if (!a.owner.empty()) {
    try {
      c.owner = parse_lux_did(a.owner).address;
    } catch (const Error&) {  // an owner that is no did:lux account: the contract refuses it
    }
  }
  c.epsilon_x1e6 = kNoEpsilon;
  if (const std::optional<double> epsilon = privacy_number(a.privacy, "privacy.epsilon")) {
    const double scaled = std::ceil(*epsilon * 1e6);  // rounded up: never claims more privacy
    c.epsilon_x1e6 = scaled < 18446744073709549568.0 ? uint64_t(scaled) : kNoEpsilon;
  }
  if (const std::optional<double> delta = privacy_number(a.privacy, "privacy.delta")) {
    // The largest e with δ ≤ 10^-e, so that 10^-e never understates δ (a relative 1e-12 absorbs
    // the rounding of the decimal text and of pow).
    while (c.delta_exponent < 255 &&
           *delta <= std::pow(10.0, -double(c.delta_exponent + 1)) * (1 + 1e-12))
      ++c.delta_exponent;
  }
  return c;
}

Hash32 attestation_digest(const ChainAttestation& c) {
  return keccak256(abi_encode({abi_bytes32(keccak256(kKind)), abi_bytes32(c.payload_hash),
                               abi_bytes32(c.adapter), abi_bytes32(c.base), abi_address(c.owner),
                               abi_bytes32(c.measurement), abi_uint(c.epsilon_x1e6),
                               abi_uint(c.delta_exponent)}));
}

nlohmann::json attestation_json(const Attestation& a) {
  nlohmann::json out = nlohmann::json::parse(attestation_payload(a));
  out["signature"] = a.signature;
  return out;
}

Attestation parse_attestation(const std::string& text) {
  nlohmann::json in;
  try {
    in = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    fail("the attestation is not JSON");
  }
  if (!in.is_object() || in.value("kind", "") != kKind)
    fail("not a bitdelta attestation (\"kind\": \"", kKind, "\")");
  auto text_field = [&](const char* name) {
    if (!in.contains(name) || !in[name].is_string())
      fail("the attestation has no text field \"", name, "\"");
    return in[name].get<std::string>();
  };
  Attestation a;
  a.platform = text_field("platform");
  a.measurement = text_field("measurement");
  a.adapter = text_field("adapter");
  a.base = text_field("base");
  a.owner = text_field("owner");
  a.issued_at = text_field("issued_at");
  a.nonce = text_field("nonce");
  a.signer = text_field("signer");
  a.signature = text_field("signature");
  if (!in.contains("privacy") || !in["privacy"].is_object())
    fail("the attestation has no object field \"privacy\"");
  a.privacy = in["privacy"];
  for (const auto& [name, value] :
       {std::pair{"measurement", a.measurement}, {"adapter", a.adapter}, {"nonce", a.nonce}})
    if (!is_hex(value, 64))
      fail("the attestation's \"", name, "\" is not 64 lower-case hex digits");
  const std::set<std::string> known = {"kind",  "platform", "measurement", "adapter",
                                       "base",  "owner",    "privacy",     "issued_at",
                                       "nonce", "signer",   "signature"};
  for (const auto& item : in.items())
    if (!known.count(item.key())) fail("the attestation has an unknown field \"", item.key(), "\"");
  return a;
}

std::string measure(const std::string& binary_path, const std::string& config_path) {
  return sha256_hex("bitdelta-measurement-1\n" + file_sha256(binary_path) + "\n" +
                    file_sha256(config_path) + "\n");
}

Attestation describe_adapter(const std::string& adapter_path) {
  const AdapterFile adapter(adapter_path);
  Attestation a;
  a.adapter = adapter_fingerprint(adapter_path);
  a.base = adapter.info().base_fingerprint;
  a.owner = adapter.info().owner;
  a.privacy = adapter.info().privacy.empty() ? nlohmann::json::object()
                                             : nlohmann::json::parse(adapter.info().privacy);
  return a;
}

Ed25519Key new_ed25519_key() {
  init_sodium();
  Ed25519Key key;
  crypto_sign_keypair(key.public_key.data(), key.secret_key.data());
  return key;
}

void write_ed25519_key(const std::string& path, const Ed25519Key& key) {
  const nlohmann::ordered_json out = {{"kind", kEd25519KeyKind},
                                      {"public_key", to_hex(key.public_key)},
                                      {"secret_key", to_hex(key.secret_key)}};
  write_new_private_file(path, out.dump(2) + "\n");
}

SigningKey read_signing_key(const std::string& path) {
  nlohmann::json in;
  try {
    in = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception&) {
    fail(path, " is not a key file (not JSON)");
  }
  SigningKey key;
  if (in.is_object() && in.value("kind", "") == kEd25519KeyKind) {
    if (!in["public_key"].is_string() || !in["secret_key"].is_string())
      fail(path, ": an Ed25519 key file needs public_key and secret_key");
    const std::vector<uint8_t> pk = from_hex(in["public_key"].get<std::string>()),
                               sk = from_hex(in["secret_key"].get<std::string>());
    if (pk.size() != 32 || sk.size() != 64) fail(path, ": wrong Ed25519 key lengths");
    std::copy(pk.begin(), pk.end(), key.ed25519.public_key.begin());
    std::copy(sk.begin(), sk.end(), key.ed25519.secret_key.begin());
    if (!std::equal(pk.begin(), pk.end(), sk.begin() + 32))
      fail(path, ": the public key does not belong to the secret key");
    key.platform = "sim-ed25519";
    return key;
  }
  key.secp256k1 = read_key_file(path);
  key.platform = "sim-eip191";
  return key;
}

void sign_attestation(Attestation& a, const SigningKey& key) {
  init_sodium();
  std::array<uint8_t, 32> nonce;
  randombytes_buf(nonce.data(), nonce.size());
  a.platform = key.platform;
  a.issued_at = utc_now();
  a.nonce = to_hex(nonce);
  if (key.platform == "sim-ed25519") {
    a.signer = to_hex(key.ed25519.public_key);
    const std::string payload = attestation_payload(a);
    std::array<uint8_t, 64> signature;
    crypto_sign_detached(signature.data(), nullptr,
                         reinterpret_cast<const unsigned char*>(payload.data()), payload.size(),
                         key.ed25519.secret_key.data());
    a.signature = to_hex(signature);
  } else {
    a.signer = key.secp256k1.did.str();
    const Hash32 digest = attestation_digest(chain_attestation(a));
    a.signature =
        "0x" + to_hex(sign_personal_message(
                   key.secp256k1.key,
                   std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size())));
  }
}

TrustedKeys read_trusted_keys(const std::string& path) {
  TrustedKeys trusted;
  for (const std::string& line : content_lines(path)) {
    const size_t space = line.find_first_of(" \t");
    const std::string platform = line.substr(0, space);
    const std::string key =
        space == std::string::npos ? "" : line.substr(line.find_first_not_of(" \t", space));
    if (platform == "sim-ed25519") {
      if (!is_hex(key, 64)) fail(path, ": '", line, "' is not sim-ed25519 and 64 hex digits");
      trusted.keys.emplace_back(platform, key);
    } else if (platform == "sim-eip191") {
      trusted.keys.emplace_back(platform, parse_lux_did(key).str());
    } else {
      fail(path, ": unknown platform '", platform, "' (sim-ed25519 or sim-eip191)");
    }
  }
  if (trusted.keys.empty()) fail(path, " trusts no key");
  return trusted;
}

std::vector<std::string> read_measurements(const std::string& path) {
  std::vector<std::string> measurements = content_lines(path);
  for (const std::string& m : measurements)
    if (!is_hex(m, 64)) fail(path, ": '", m, "' is not a measurement (64 lower-case hex digits)");
  return measurements;
}

std::unique_ptr<PlatformVerifier> verifier_for(const std::string& platform) {
  if (platform == "sim-ed25519") return std::make_unique<Ed25519Verifier>();
  if (platform == "sim-eip191") return std::make_unique<Eip191Verifier>();
  if (platform == "sev-snp" || platform == "tdx" || platform == "nvidia-cc")
    fail("platform '", platform, "': verifying hardware quotes is not built here (docs/trust.md)");
  fail("unknown attestation platform ", quote_bytes(platform));
}

void verify_attestation(const Attestation& a, const std::string& adapter_path,
                        const TrustedKeys& trusted,
                        const std::vector<std::string>* allowed_measurements) {
  verifier_for(a.platform)->verify_signature(a, trusted);
  const Attestation actual = describe_adapter(adapter_path);
  if (a.adapter != actual.adapter)
    fail("the attestation is for adapter ", a.adapter, ", not this file (", actual.adapter, ")");
  if (a.base != actual.base)
    fail("the attested base ", a.base, " is not the adapter's ", actual.base);
  if (a.owner != actual.owner)
    fail("the attested owner '", a.owner, "' is not the adapter's '", actual.owner, "'");
  if (a.privacy != actual.privacy)
    fail("the attested privacy ", a.privacy.dump(), " is not the adapter's ",
         actual.privacy.dump());
  if (allowed_measurements && std::find(allowed_measurements->begin(), allowed_measurements->end(),
                                        a.measurement) == allowed_measurements->end())
    fail("the measurement ", a.measurement, " is not among the allowed ones");
}

}  // namespace bd
