// Attestations: a signed statement that binds an adapter (its tensors' fingerprint, its base, its
// owner and the privacy it recorded) to how it was made (a measurement: SHA-256 of the training
// binary and its configuration), issued at a time with a fresh nonce. docs/trust.md has the
// document format and what verification checks.
//
// Signers are platforms. Built here: two software signers, "sim-ed25519" (libsodium Ed25519)
// and "sim-eip191" (a did:lux key signing as EIP-191 personal_sign, which a contract can check
// with ecrecover). They prove who signed, not what ran: a software signer is no hardware
// guarantee. Hardware platforms ("sev-snp", "tdx", "nvidia-cc") plug in as PlatformVerifier
// implementations that check a quote's certificate chain; none is built, and attestations that
// name them are refused with that reason.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trust/did.h"
#include "trust/ethereum.h"

namespace bd {

struct Attestation {
  std::string platform;     // sim-ed25519 | sim-eip191 (| sev-snp | tdx | nvidia-cc)
  std::string measurement;  // 64 hex
  std::string adapter;      // 64 hex: fingerprint of the adapter file's tensors
  std::string base;         // 64 hex: the adapter's base fingerprint
  std::string owner;        // the adapter's owner DID ("" when it names none)
  nlohmann::json privacy;   // the adapter's recorded privacy fields (an object, {} if none)
  std::string issued_at;    // UTC, ISO 8601
  std::string nonce;        // 64 hex, random
  std::string signer;       // sim-ed25519: public key (64 hex); sim-eip191: the signer's did:lux
  std::string signature;    // hex
};

// The bytes an Ed25519 signature covers: every field but the signature, as compact JSON with
// sorted keys and "kind": "bitdelta-attestation-1".
std::string attestation_payload(const Attestation& attestation);

// What the registry contract (contracts/BitDeltaRegistry.sol) reads of an attestation, as its
// types: the payload's Keccak-256, which covers every field, and the fields the contract acts
// on. docs/registry.md has the mapping.
inline constexpr uint64_t kNoEpsilon = UINT64_MAX;  // no privacy.epsilon recorded
struct ChainAttestation {
  Hash32 payload_hash{};       // keccak256(attestation_payload)
  Hash32 adapter{};            // the adapter's fingerprint (64 hex) as 32 bytes
  Hash32 base{};               // the base's fingerprint
  Address owner{};             // the owner DID's account; zero unless it is did:lux:<chain>:0x…
  Hash32 measurement{};        // 32 bytes
  uint64_t epsilon_x1e6 = 0;   // ⌈ε · 10^6⌉ of privacy.epsilon; kNoEpsilon when none
  uint8_t delta_exponent = 0;  // the largest e ≤ 255 with privacy.delta ≤ 10^-e; 0 when none
};
ChainAttestation chain_attestation(const Attestation& attestation);
// keccak256(abi.encode(keccak256("bitdelta-attestation-1"), payload hash, adapter, base, owner,
// measurement, epsilon_x1e6, delta_exponent)): the 32 bytes a sim-eip191 signer signs as an
// EIP-191 personal message, which the contract recomputes and checks with ecrecover.
Hash32 attestation_digest(const ChainAttestation& attestation);
nlohmann::json attestation_json(const Attestation& attestation);  // the payload + signature
// Parses an attestation document; throws bd::Error naming the first missing or mistyped field.
Attestation parse_attestation(const std::string& text);

// SHA-256 of "bitdelta-measurement-1\n" + sha256(binary) + "\n" + sha256(configuration) + "\n"
// (hex digests): what a verifier's list of allowed measurements holds.
std::string measure(const std::string& binary_path, const std::string& config_path);

// The fields an attestation of this adapter file must carry (all but platform, signer, time,
// nonce and signature).
Attestation describe_adapter(const std::string& adapter_path);

// An Ed25519 key of the sim-ed25519 signer (key file: JSON, mode 0600, never overwritten).
struct Ed25519Key {
  std::array<uint8_t, 32> public_key{};
  std::array<uint8_t, 64> secret_key{};
};
Ed25519Key new_ed25519_key();
void write_ed25519_key(const std::string& path, const Ed25519Key& key);

// A signing key of either software platform, read from a key file of `attest keygen`
// (Ed25519) or `id new` (secp256k1).
struct SigningKey {
  std::string platform;  // sim-ed25519 | sim-eip191
  Ed25519Key ed25519;
  KeyFile secp256k1;
};
SigningKey read_signing_key(const std::string& path);

// Fills platform, signer, issued_at (now), a random nonce and the signature.
void sign_attestation(Attestation& attestation, const SigningKey& key);

// Keys trusted to attest: lines "sim-ed25519 <public key hex>" or "sim-eip191 <did:lux>", '#'
// comments. Measurements: lines of 64 hex.
struct TrustedKeys {
  std::vector<std::pair<std::string, std::string>> keys;  // platform, key or DID (normalised)
};
TrustedKeys read_trusted_keys(const std::string& path);
std::vector<std::string> read_measurements(const std::string& path);

// One platform's check that `attestation` was signed by a key in `trusted`.
class PlatformVerifier {
 public:
  virtual ~PlatformVerifier() = default;
  virtual void verify_signature(const Attestation& attestation,
                                const TrustedKeys& trusted) const = 0;
};
// The verifier of a platform; throws bd::Error for hardware platforms (not built) and unknown
// ones.
std::unique_ptr<PlatformVerifier> verifier_for(const std::string& platform);

// Verifies everything: the signer is trusted and signed these exact fields, the fields match
// the adapter file (fingerprint, base, owner, privacy), and the measurement is allowed (when a
// list is given). Throws bd::Error with the first reason it fails.
void verify_attestation(const Attestation& attestation, const std::string& adapter_path,
                        const TrustedKeys& trusted,
                        const std::vector<std::string>* allowed_measurements);

}  // namespace bd
