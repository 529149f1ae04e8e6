// The registry client's pieces (src/registry/): RLP against the Ethereum wiki's examples and
// ethers, quantities, EIP-1559 transactions signed here and parsed by ethers v6
// (tests/node/eth_transaction.mjs) with the sender recovered, and revert reasons as the nodes
// send them. The contract itself, and this client driving it, are tested on a real EVM in
// tests/node/registry.test.mjs.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "registry/json_rpc.h"
#include "registry/quantity.h"
#include "registry/rlp.h"
#include "registry/transaction.h"
#include "test_util.h"

namespace bd {
namespace {

std::string hex(const std::string& bytes) {
  return "0x" + to_hex(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

std::string node_script() {
  return std::string(BITDELTA_SOURCE_DIR) + "/tests/node/eth_transaction.mjs";
}

// The examples of ethereum.org's RLP page.
TEST(Rlp, PublishedExamples) {
  EXPECT_EQ(hex(rlp_string("dog")), "0x83646f67");
  EXPECT_EQ(hex(rlp_list({rlp_string("cat"), rlp_string("dog")})), "0xc88363617483646f67");
  EXPECT_EQ(hex(rlp_string("")), "0x80");
  EXPECT_EQ(hex(rlp_list({})), "0xc0");
  EXPECT_EQ(hex(rlp_string(std::string(1, '\0'))), "0x00");
  EXPECT_EQ(hex(rlp_string(std::string(1, '\x0f'))), "0x0f");
  EXPECT_EQ(hex(rlp_string(std::string("\x04\x00", 2))), "0x820400");
  // [ [], [[]], [ [], [[]] ] ]
  const std::string empty = rlp_list({});
  const std::string nested = rlp_list({empty});
  EXPECT_EQ(hex(rlp_list({empty, nested, rlp_list({empty, nested})})), "0xc7c0c1c0c3c0c1c0");
  const std::string lorem = "Lorem ipsum dolor sit amet, consectetur adipisicing elit";
  EXPECT_EQ(hex(rlp_string(lorem)).substr(0, 6), "0xb838");
  EXPECT_EQ(rlp_string(lorem).size(), 2 + lorem.size());
}

TEST(Rlp, LongListsAgreeWithEthers) {
  const test::ScratchDir scratch;
  std::vector<std::string> items;
  nlohmann::json reference = nlohmann::json::array();
  for (int i = 0; i < 40; ++i) {  // a payload over 55 bytes, and a string over 255
    const std::string item(size_t(i * 9), char('a' + i % 26));
    items.push_back(rlp_string(item));
    reference.push_back(hex(item));
  }
  const test::CommandResult r = test::run_command(
      "node " + test::shell_quote(node_script()) + " rlp " + test::shell_quote(reference.dump()),
      scratch);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).get<std::string>(), hex(rlp_list(items)));
}

TEST(Quantity, HexDecimalAndArithmetic) {
  EXPECT_EQ(quantity_hex(quantity_from_hex("0x0")), "0x0");
  EXPECT_EQ(quantity_hex(quantity_from_hex("0x001a")), "0x1a");
  const Quantity big = quantity_from_decimal(
      "115792089237316195423570985008687907853269984665640564039457584007913129639935");
  EXPECT_EQ(quantity_hex(big), "0x" + std::string(64, 'f'));
  EXPECT_EQ(quantity_decimal(quantity_from_hex("0xde0b6b3a7640000")), "1000000000000000000");
  EXPECT_EQ(quantity_decimal(quantity_add(quantity_from_decimal("999"), abi_uint(1))), "1000");
  EXPECT_EQ(quantity_decimal(quantity_times(quantity_from_decimal("123456789012345678901"), 3)),
            "370370367037037036703");
  EXPECT_EQ(quantity_minimal_bytes(abi_uint(0)), "");
  EXPECT_EQ(quantity_minimal_bytes(abi_uint(0x0400)), std::string("\x04\x00", 2));
  EXPECT_THROW(quantity_add(big, abi_uint(1)), Error);
  EXPECT_THROW(quantity_times(big, 2), Error);
  for (const char* bad : {"", "0x", "12", "0xg1",
                          "0x"
                          "10000000000000000000000000000000000000000000000000000000000000000"})
    EXPECT_THROW(quantity_from_hex(bad), Error) << bad;
  for (const char* bad : {"", "-1", "1.5", "1e18"})
    EXPECT_THROW(quantity_from_decimal(bad), Error) << bad;
}

// A transaction signed here is one ethers reads back field for field, from our key's address.
TEST(Transaction, Eip1559SignedHereParsesInEthers) {
  const test::ScratchDir scratch;
  const PrivateKey key = new_private_key();
  Eip1559Transaction call;
  call.chain_id = 96369;
  call.nonce = 7;
  call.gas = 210000;
  call.max_priority_fee = abi_uint(1500000000);
  call.max_fee = quantity_from_decimal("30000000000");
  call.to = parse_address("0x2c7536E3605D9C16a7a3D7b1898e529396a65c23");
  call.value = quantity_from_decimal("1000000000000000001");
  call.data = std::string("\xa9\x05\x9c\xbb", 4) + std::string(64, '\x01');
  Eip1559Transaction creation = call;
  creation.to.reset();
  creation.nonce = 0;
  creation.value = {};
  creation.data = std::string(300, '\x60');
  for (const Eip1559Transaction* tx : {&call, &creation}) {
    const std::string raw = sign_transaction(*tx, key);
    ASSERT_EQ(raw[0], '\x02');
    const test::CommandResult r = test::run_command(
        "node " + test::shell_quote(node_script()) + " parse " + hex(raw), scratch);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json parsed = nlohmann::json::parse(r.out);
    EXPECT_EQ(parsed["type"], 2);
    EXPECT_EQ(parsed["chainId"], std::to_string(tx->chain_id));
    EXPECT_EQ(parsed["nonce"], tx->nonce);
    EXPECT_EQ(parsed["maxPriorityFeePerGas"], quantity_decimal(tx->max_priority_fee));
    EXPECT_EQ(parsed["maxFeePerGas"], quantity_decimal(tx->max_fee));
    EXPECT_EQ(parsed["gasLimit"], std::to_string(tx->gas));
    if (tx->to)
      EXPECT_EQ(parsed["to"], checksum_address(*tx->to));
    else
      EXPECT_TRUE(parsed["to"].is_null());
    EXPECT_EQ(parsed["value"], quantity_decimal(tx->value));
    EXPECT_EQ(parsed["data"], hex(tx->data));
    EXPECT_EQ(parsed["from"], checksum_address(address_of(key)));
    EXPECT_EQ(parsed["hash"], "0x" + to_hex(keccak256(raw)));
  }
}

TEST(JsonRpc, RevertReasonsAsNodesSendThem) {
  // Error(string) "only the admin", ABI-encoded after its selector.
  const std::string data =
      "0x08c379a0"
      "0000000000000000000000000000000000000000000000000000000000000020"
      "000000000000000000000000000000000000000000000000000000000000000e"
      "6f6e6c79207468652061646d696e000000000000000000000000000000000000";
  EXPECT_EQ(revert_reason({{"code", 3}, {"message", "execution reverted"}, {"data", data}}),
            "only the admin");  // geth, anvil
  EXPECT_EQ(revert_reason({{"code", -32000},
                           {"message", "VM Exception while processing transaction: revert"},
                           {"data", {{"result", data}}}}),
            "only the admin");  // ganache's result
  EXPECT_EQ(revert_reason({{"data", {{"reason", "nothing to withdraw"}}}}), "nothing to withdraw");
  EXPECT_EQ(revert_reason({{"code", -32000}, {"message", "nonce too low"}}), "");
  EXPECT_EQ(revert_reason({{"data", "0x12345678"}}), "");  // a custom error: no reason text
  EXPECT_THROW(JsonRpc("ftp://example"), Error);
  EXPECT_THROW(JsonRpc("127.0.0.1:8545"), Error);
  // Nothing listens on port 1: one clear error, no hang.
  EXPECT_THROW(JsonRpc("http://127.0.0.1:1").call("eth_chainId", nlohmann::json::array()), Error);
}

}  // namespace
}  // namespace bd
