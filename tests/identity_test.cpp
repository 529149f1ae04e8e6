// did:lux identities and EIP-191 signatures (trust/did.h, trust/ethereum.h) against published
// Ethereum vectors and against ethers v6 (tests/node/eth_identity.mjs) on the same keys.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"
#include "trust/did.h"

namespace bd {
namespace {

// The key and address of the eth-account / web3.js documentation examples (ethers gives the
// same address).
constexpr const char* kKey = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
constexpr const char* kAddress = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";

PrivateKey key_from_hex(const std::string& hex) {
  const std::vector<uint8_t> bytes = from_hex(hex);
  PrivateKey key;
  std::copy(bytes.begin(), bytes.end(), key.begin());
  return key;
}

TEST(Ethereum, Keccak256Vectors) {
  // Keccak-256 (not SHA3-256) of "" and "abc", as Ethereum uses it.
  EXPECT_EQ(to_hex(keccak256("")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
  EXPECT_EQ(to_hex(keccak256("abc")),
            "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");
}

// EIP-55's own examples (eips.ethereum.org/EIPS/eip-55): all-caps, all-lower and mixed case.
TEST(Ethereum, Eip55Checksums) {
  for (const char* address :
       {"0x52908400098527886E0F7030069857D2E4169EE7", "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
        "0xde709f2102306220921060314715629080e2fb77", "0x27b1fdb04752bbc536007a920d24acb5a9847aaa",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"}) {
    const Address parsed = parse_address(address);
    const std::string text = address;
    const bool mixed = text != "0x" + to_hex(parsed) && text.substr(2) != [&] {
      std::string upper = to_hex(parsed);
      for (char& c : upper) c = char(std::toupper(c));
      return upper;
    }();
    if (mixed) {
      EXPECT_EQ(checksum_address(parsed), text);
      std::string wrong = text;  // one letter's case flipped: the checksum catches it
      for (char& c : wrong)
        if (std::isalpha(c) && c != 'x') {
          c = std::islower(c) ? char(std::toupper(c)) : char(std::tolower(c));
          break;
        }
      EXPECT_THROW(parse_address(wrong), Error) << wrong;
    }
  }
  EXPECT_EQ(checksum_address(parse_address("0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359")),
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359");
  for (const char* bad :
       {"", "0x", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAedd",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg"})
    EXPECT_THROW(parse_address(bad), Error) << bad;
}

TEST(Ethereum, KeyToAddressAndSignaturesRoundTrip) {
  const PrivateKey key = key_from_hex(kKey);
  EXPECT_EQ(checksum_address(address_of(key)), kAddress);
  const Signature65 signature = sign_personal_message(key, "Hello World");
  EXPECT_EQ(recover_personal_message("Hello World", signature), address_of(key));
  EXPECT_NE(recover_personal_message("Hello World!", signature), address_of(key));
  Signature65 tampered = signature;
  tampered[10] ^= 1;
  try {  // a changed r recovers another key or none
    EXPECT_NE(recover_personal_message("Hello World", tampered), address_of(key));
  } catch (const Error&) {
  }
  Signature65 bad_v = signature;
  bad_v[64] = 29;
  EXPECT_THROW(recover_personal_message("Hello World", bad_v), Error);
  EXPECT_THROW(parse_signature("0x1234"), Error);
  const PrivateKey fresh = new_private_key();
  EXPECT_EQ(recover_personal_message("", sign_personal_message(fresh, "")), address_of(fresh));
  EXPECT_THROW(address_of(PrivateKey{}), Error);  // 0 is not a key
}

// The same key and messages through ethers v6: identical signatures (RFC 6979, low s) both ways.
TEST(Ethereum, MatchesEthers) {
  const std::string node_dir = std::string(BITDELTA_SOURCE_DIR) + "/tests/node";
  ASSERT_TRUE(std::filesystem::exists(node_dir + "/node_modules/ethers"))
      << "run scripts/install-deps.sh --test (npm ci in tests/node)";
  test::ScratchDir scratch;
  const PrivateKey fresh = new_private_key();
  for (const auto& [key, message] : std::vector<std::pair<PrivateKey, std::string>>{
           {key_from_hex(kKey), "Hello World"},
           {fresh, "bitdelta adapter 0x" + to_hex(keccak256("adapter"))},
           {fresh, "multi\nline \xc3\xa9 message"}}) {
    const test::CommandResult r =
        test::run_command("node " + test::shell_quote(node_dir + "/eth_identity.mjs") + " sign 0x" +
                              to_hex(key) + " " + test::shell_quote(message),
                          scratch);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json ethers = nlohmann::json::parse(r.out);
    EXPECT_EQ(ethers["address"], checksum_address(address_of(key)));
    EXPECT_EQ(ethers["signature"], "0x" + to_hex(sign_personal_message(key, message)));
    EXPECT_EQ(
        recover_personal_message(message, parse_signature(ethers["signature"].get<std::string>())),
        address_of(key));
  }
}

TEST(LuxDid, ParsesAndValidates) {
  const LuxDid did = parse_lux_did(std::string("did:lux:96369:") + kAddress);
  EXPECT_EQ(did.chain_id, 96369u);
  EXPECT_EQ(checksum_address(did.address), kAddress);
  EXPECT_EQ(did.str(), std::string("did:lux:96369:") + kAddress);
  EXPECT_EQ(parse_lux_did("did:lux:1:0x2c7536e3605d9c16a7a3d7b1898e529396a65c23").str(),
            std::string("did:lux:1:") + kAddress);
  for (const char* bad :
       {"did:eth:1:0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        "did:lux:0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        "did:lux::0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        "did:lux:01:0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        "did:lux:-1:0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        "did:lux:99999999999999999999:0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        "did:lux:1:0x2C7536E3605D9C16a7a3D7b1898e529396a65c23",  // checksum broken
        "did:lux:1:0x2c7536E3605D9C16a7a3D7b1898e529396a65c2", "did:lux:1:"})
    EXPECT_THROW(parse_lux_did(bad), Error) << bad;
}

TEST(IdCli, NewAddressSignVerify) {
  test::ScratchDir scratch;
  const std::string key = scratch / "alice.key";
  auto run = [&](const std::string& arguments) { return test::run_bitdelta(arguments, scratch); };
  test::CommandResult r = run("id new -o " + test::shell_quote(key) + " --chain-id 7 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string did = nlohmann::json::parse(r.out)["did"];
  EXPECT_EQ(did.rfind("did:lux:7:0x", 0), 0u);
  struct stat info {};
  ASSERT_EQ(stat(key.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  const std::string before = read_file(key);
  r = run("id new -o " + test::shell_quote(key) + " --chain-id 7");  // never overwrites
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(read_file(key), before);
  r = run("id address --key " + test::shell_quote(key));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, did + "\n");
  r = run("id sign --key " + test::shell_quote(key) + " --message 'I own this adapter'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string signature = r.out.substr(0, r.out.size() - 1);
  r = run("id verify --did " + did + " --signature " + signature +
          " --message 'I own this adapter'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run("id verify --did " + did + " --signature " + signature +
          " --message 'I own that adapter'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("invalid: signed by"), std::string::npos) << r.err;
  r = run(std::string("id verify --did did:lux:7:") + kAddress + " --signature " + signature +
          " --message 'I own this adapter'");
  EXPECT_EQ(r.exit_code, 1);
  for (const std::string& bad : std::vector<std::string>{
           "id new --chain-id 7", "id new -o " + test::shell_quote(scratch / "b.key"),
           "id address --key " + test::shell_quote(scratch / "missing.key"),
           "id sign --key " + test::shell_quote(key),
           "id verify --did nope --signature 0x00 --message x", "id frobnicate"}) {
    r = run(bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << bad << ": " << r.err;
  }
}

}  // namespace
}  // namespace bd
