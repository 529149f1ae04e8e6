// Attestations (trust/attestation.h): both software signers sign and verify, and every change —
// any field, another adapter, an untrusted key, a measurement not allowed, a hardware platform
// with no verifier — fails with its reason.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/adapter.h"
#include "test_util.h"
#include "trust/abi.h"
#include "trust/attestation.h"

namespace bd {
namespace {

const std::string kOwner = "did:lux:7:0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";

// A one-matrix adapter whose signs start with `first_byte`.
void write_test_adapter(const std::string& path, uint8_t first_byte) {
  AdapterInfo info;
  info.base_fingerprint = std::string(64, 'a');
  info.finetune_fingerprint = std::string(64, 'b');
  info.owner = kOwner;
  info.scale_mode = "mean";
  info.granularity = "matrix";
  info.privacy = R"({"privacy.epsilon": "4.0", "privacy.delta": "1e-05"})";
  info.tool_version = "test";
  info.created = "2026-12-02T00:00:00Z";
  std::vector<uint8_t> signs = {first_byte, 0x0f, 0x33, 0x55};
  float scale = 0.01f;
  const std::vector<AdapterMatrix> matrices = {{"model.layers.0.mlp.up_proj.weight", 4, 8,
                                                TensorView{DType::U8, {4, 1}, signs.data()},
                                                TensorView{DType::F32, {1}, &scale}}};
  write_adapter(path, info, matrices, {}, /*overwrite=*/false);
}

std::string reason_of(const Attestation& a, const std::string& adapter, const TrustedKeys& trusted,
                      const std::vector<std::string>* measurements = nullptr) {
  try {
    verify_attestation(a, adapter, trusted, measurements);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class Attestations : public ::testing::Test {
 protected:
  void SetUp() override {
    adapter_ = scratch_ / "user.bitdelta";
    other_ = scratch_ / "other.bitdelta";
    write_test_adapter(adapter_, 0xa5);
    write_test_adapter(other_, 0xa4);
    ed25519_.platform = "sim-ed25519";
    ed25519_.ed25519 = new_ed25519_key();
    secp_.platform = "sim-eip191";
    secp_.secp256k1.key = new_private_key();
    secp_.secp256k1.did = {7, address_of(secp_.secp256k1.key)};
    trusted_.keys = {{"sim-ed25519", to_hex(ed25519_.ed25519.public_key)},
                     {"sim-eip191", secp_.secp256k1.did.str()}};
  }
  Attestation signed_by(const SigningKey& key) {
    Attestation a = describe_adapter(adapter_);
    a.measurement = std::string(64, 'c');
    sign_attestation(a, key);
    return a;
  }
  test::ScratchDir scratch_;
  std::string adapter_, other_;
  SigningKey ed25519_, secp_;
  TrustedKeys trusted_;
};

TEST_F(Attestations, BothSoftwareSignersVerify) {
  for (const SigningKey* key : {&ed25519_, &secp_}) {
    SCOPED_TRACE(key->platform);
    const Attestation a = signed_by(*key);
    EXPECT_EQ(a.platform, key->platform);
    EXPECT_EQ(a.owner, kOwner);
    EXPECT_EQ(a.privacy["privacy.epsilon"], "4.0");
    EXPECT_EQ(reason_of(a, adapter_, trusted_), "");
    const std::vector<std::string> allowed = {std::string(64, 'c')};
    EXPECT_EQ(reason_of(a, adapter_, trusted_, &allowed), "");
    // The document round-trips through its JSON.
    const Attestation parsed = parse_attestation(attestation_json(a).dump(2));
    EXPECT_EQ(reason_of(parsed, adapter_, trusted_), "");
  }
  // Two attestations of the same adapter differ in their nonces.
  EXPECT_NE(signed_by(ed25519_).nonce, signed_by(ed25519_).nonce);
}

TEST_F(Attestations, EveryChangeFailsWithItsReason) {
  for (const SigningKey* key : {&ed25519_, &secp_}) {
    SCOPED_TRACE(key->platform);
    const Attestation good = signed_by(*key);
    // Any field changed after signing breaks the signature.
    const std::vector<std::pair<std::string, std::function<void(Attestation&)>>> changes = {
        {"measurement", [](Attestation& a) { a.measurement[0] = 'd'; }},
        {"adapter", [](Attestation& a) { a.adapter[0] = a.adapter[0] == '0' ? '1' : '0'; }},
        {"base", [](Attestation& a) { a.base[0] = 'b'; }},
        {"owner", [](Attestation& a) { a.owner += "0"; }},
        {"privacy", [](Attestation& a) { a.privacy["privacy.epsilon"] = "0.5"; }},
        {"issued_at", [](Attestation& a) { a.issued_at[3] = '9'; }},
        {"nonce", [](Attestation& a) { a.nonce[0] = a.nonce[0] == 'f' ? 'e' : 'f'; }},
        {"signature",
         [](Attestation& a) { a.signature[10] = a.signature[10] == '0' ? '1' : '0'; }}};
    for (const auto& [field, change] : changes) {
      Attestation a = good;
      change(a);
      EXPECT_NE(reason_of(a, adapter_, trusted_), "") << field;
    }
    // Another adapter: the signature holds, the fingerprint does not.
    EXPECT_NE(reason_of(good, other_, trusted_).find("not this file"), std::string::npos)
        << reason_of(good, other_, trusted_);
    // A signer nobody trusts.
    TrustedKeys only_other = trusted_;
    only_other.keys.erase(only_other.keys.begin() + (key == &ed25519_ ? 0 : 1));
    EXPECT_NE(reason_of(good, adapter_, only_other).find("not among the trusted"),
              std::string::npos);
    // A measurement that is not allowed.
    const std::vector<std::string> allowed = {std::string(64, 'e')};
    EXPECT_NE(reason_of(good, adapter_, trusted_, &allowed).find("not among the allowed"),
              std::string::npos);
  }
  // The signer field swapped for another trusted key: that key did not sign.
  Attestation swapped = signed_by(ed25519_);
  swapped.signer = to_hex(new_ed25519_key().public_key);
  TrustedKeys also = trusted_;
  also.keys.emplace_back("sim-ed25519", swapped.signer);
  EXPECT_NE(reason_of(swapped, adapter_, also).find("does not match"), std::string::npos);
  // Hardware platforms have an interface but no verifier here: refused, not faked.
  Attestation hardware = signed_by(ed25519_);
  hardware.platform = "sev-snp";
  EXPECT_NE(reason_of(hardware, adapter_, trusted_).find("not built"), std::string::npos);
  hardware.platform = "frobnitz";
  EXPECT_NE(reason_of(hardware, adapter_, trusted_).find("unknown attestation platform"),
            std::string::npos);
}

// What the registry contract reads of an attestation (docs/registry.md): the payload's hash, the
// fingerprints and measurement as 32 bytes, the owner's account, ε rounded up to millionths and
// δ's decimal exponent rounded so that 10^-e ≥ δ; the sim-eip191 signature is over its digest.
TEST_F(Attestations, ChainAttestationCarriesTheAttestedFields) {
  const Attestation a = signed_by(secp_);
  const ChainAttestation c = chain_attestation(a);
  EXPECT_EQ(c.payload_hash, keccak256(attestation_payload(a)));
  EXPECT_EQ(to_hex(c.adapter), a.adapter);
  EXPECT_EQ(to_hex(c.base), a.base);
  EXPECT_EQ(to_hex(c.measurement), a.measurement);
  EXPECT_EQ(c.owner, parse_lux_did(kOwner).address);
  EXPECT_EQ(c.epsilon_x1e6, 4000000u);  // "4.0"
  EXPECT_EQ(c.delta_exponent, 5);       // "1e-05"
  const Hash32 digest = attestation_digest(c);
  EXPECT_EQ(
      recover_personal_message(std::string_view(reinterpret_cast<const char*>(digest.data()), 32),
                               parse_signature(a.signature)),
      secp_.secp256k1.did.address);

  auto with_privacy = [&](nlohmann::json privacy) {
    Attestation changed = a;
    changed.privacy = std::move(privacy);
    return chain_attestation(changed);
  };
  EXPECT_EQ(with_privacy({{"privacy.epsilon", "3.5107901"}}).epsilon_x1e6, 3510791u);  // up
  EXPECT_EQ(with_privacy({{"privacy.epsilon", "0"}}).epsilon_x1e6, 0u);
  EXPECT_EQ(with_privacy({{"privacy.delta", "2e-05"}}).delta_exponent, 4);  // 1e-4 ≥ 2e-5
  EXPECT_EQ(with_privacy({{"privacy.delta", "1e-06"}}).delta_exponent, 6);
  EXPECT_EQ(with_privacy({{"privacy.delta", "1e-300"}}).delta_exponent, 255);
  EXPECT_EQ(with_privacy({{"privacy.delta", "0.5"}}).delta_exponent, 0);
  EXPECT_EQ(with_privacy(nlohmann::json::object()).epsilon_x1e6, kNoEpsilon);
  EXPECT_EQ(with_privacy(nlohmann::json::object()).delta_exponent, 0);
  EXPECT_EQ(with_privacy({{"privacy.epsilon", "1e30"}}).epsilon_x1e6, kNoEpsilon);
  EXPECT_THROW(with_privacy({{"privacy.epsilon", "lots"}}), Error);
  EXPECT_THROW(with_privacy({{"privacy.delta", "-1"}}), Error);

  Attestation named = a;
  named.owner = "did:lux:alice";  // a DID but no account: the contract refuses a zero owner
  EXPECT_EQ(chain_attestation(named).owner, Address{});
  named.adapter = "abc";
  EXPECT_THROW(chain_attestation(named), Error);
}

TEST_F(Attestations, RejectsMalformedDocuments) {
  nlohmann::json good = attestation_json(signed_by(ed25519_));
  EXPECT_THROW(parse_attestation("not json"), Error);
  EXPECT_THROW(parse_attestation("[]"), Error);
  for (const char* field : {"kind", "platform", "measurement", "privacy", "signature"}) {
    nlohmann::json broken = good;
    broken.erase(field);
    EXPECT_THROW(parse_attestation(broken.dump()), Error) << field;
  }
  nlohmann::json extra = good;
  extra["comment"] = "sneaked in";
  EXPECT_THROW(parse_attestation(extra.dump()), Error);
  nlohmann::json short_nonce = good;
  short_nonce["nonce"] = "abcd";
  EXPECT_THROW(parse_attestation(short_nonce.dump()), Error);
}

TEST_F(Attestations, CommandLineSignAndVerify) {
  auto run = [&](const std::string& arguments) { return test::run_bitdelta(arguments, scratch_); };
  const std::string key = scratch_ / "attester.key", id_key = scratch_ / "owner.key";
  test::CommandResult r = run("attest keygen -o " + test::shell_quote(key));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string trusted_line = r.out;
  ASSERT_EQ(run("id new -o " + test::shell_quote(id_key) + " --chain-id 7").exit_code, 0);
  r = run("id address --key " + test::shell_quote(id_key));
  std::ofstream(scratch_ / "trusted.txt") << "# attesters we accept\n"
                                          << trusted_line << "sim-eip191 " << r.out;
  const std::string config = scratch_ / "run.json";
  std::ofstream(config) << R"({"steps": 150, "lr": 5e-4})";
  r = run("attest measure --binary " + test::shell_quote(BITDELTA_BINARY) + " --config " +
          test::shell_quote(config));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ofstream(scratch_ / "allowed.txt") << r.out;
  for (const auto& [signer, format] :
       std::vector<std::pair<std::string, std::string>>{{key, "ed25519"}, {id_key, "eip191"}}) {
    const std::string out = scratch_ / ("attestation-" + format + ".json");
    r = run("attest sign --key " + test::shell_quote(signer) + " --adapter " +
            test::shell_quote(adapter_) + " --binary " + test::shell_quote(BITDELTA_BINARY) +
            " --config " + test::shell_quote(config) + " --format " + format + " -o " +
            test::shell_quote(out));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string verify =
        "attest verify --adapter " + test::shell_quote(adapter_) + " --attestation " +
        test::shell_quote(out) + " --trusted-keys " + test::shell_quote(scratch_ / "trusted.txt") +
        " --allowed-measurements " + test::shell_quote(scratch_ / "allowed.txt");
    r = run(verify);
    EXPECT_EQ(r.exit_code, 0) << format << ": " << r.err;
    EXPECT_NE(r.out.find("verified: "), std::string::npos);
    // The attestation against another adapter is rejected with the reason.
    r = run("attest verify --adapter " + test::shell_quote(other_) + " --attestation " +
            test::shell_quote(out) + " --trusted-keys " +
            test::shell_quote(scratch_ / "trusted.txt"));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("rejected: the attestation is for adapter"), std::string::npos) << r.err;
    // Signing again to the same file is refused (nothing overwritten).
    const std::string before = read_file(out);
    r = run("attest sign --key " + test::shell_quote(signer) + " --adapter " +
            test::shell_quote(adapter_) + " --measurement " + std::string(64, 'c') + " -o " +
            test::shell_quote(out));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(read_file(out), before);
  }
  r = run("attest sign --key " + test::shell_quote(key) + " --adapter " +
          test::shell_quote(adapter_) + " --measurement " + std::string(64, 'c') +
          " --format eip191 -o " + test::shell_quote(scratch_ / "x.json"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("the key signs as sim-ed25519"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace bd
