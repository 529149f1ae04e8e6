#include "registry/registry_client.h"

#include <chrono>
#include <thread>

#include "core/error.h"
#include "registry/transaction.h"

namespace bd {

namespace {

std::string hex0x(std::string_view bytes) {
  return "0x" + to_hex(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

std::string bytes_of_hex(const nlohmann::json& value, const char* what) {
  if (!value.is_string()) fail("the node's ", what, " is not a hex string");
  const std::vector<uint8_t> bytes = from_hex(value.get<std::string>());
  return std::string(bytes.begin(), bytes.end());
}

uint64_t uint_of_hex(const nlohmann::json& value, const char* what) {
  if (!value.is_string()) fail("the node's ", what, " is not a hex quantity");
  return abi_to_uint64(quantity_from_hex(value.get<std::string>()));
}

AbiValue word(const AbiWord& w) {
  return abi_word(w);
}
AbiValue hash(const Hash32& h) {
  return abi_word(abi_bytes32(h));
}
AbiValue address(const Address& a) {
  return abi_word(abi_address(a));
}

Hash32 to_hash(const AbiValue& v) {
  return v.word;
}

// Gas for a transaction: the node's estimate plus a fifth (estimates can fall short by the
// refund and 63/64 rules).
uint64_t with_margin(uint64_t estimate) {
  return estimate + estimate / 5 + 10000;
}

const char* kDeltaTuple = "(address,bytes32,uint32,bool,uint64,uint8,bytes32,address,uint64)";
const char* kSoupTuple = "(bytes32,bytes32,string,address,uint32,bool,uint64,uint256)";

}  // namespace

std::string calldata(const std::string& signature, const AbiValue& arguments) {
  const size_t open = signature.find('(');
  if (open == std::string::npos) fail("calldata: '", signature, "' is not name(types)");
  const AbiType types = parse_abi_type(signature.substr(open));
  return function_selector(signature) + abi_encode(types, arguments);
}

RegistryClient::RegistryClient(std::string rpc_url, std::optional<Address> contract)
    : rpc_(std::move(rpc_url)), contract_(contract) {}

const Address& RegistryClient::contract() const {
  if (!contract_) fail("no --contract address given");
  return *contract_;
}

std::string RegistryClient::call(const std::string& data) const {
  const nlohmann::json request = {{"to", checksum_address(contract())}, {"data", hex0x(data)}};
  return bytes_of_hex(rpc_.call("eth_call", {request, "latest"}), "eth_call result");
}

Receipt RegistryClient::transact(const PrivateKey& key, const std::string& data,
                                 const Quantity& value) {
  const Address from = address_of(key);
  Eip1559Transaction tx;
  tx.to = contract_;
  tx.data = data;
  tx.value = value;
  tx.chain_id = uint_of_hex(rpc_.call("eth_chainId", nlohmann::json::array()), "chain id");
  tx.nonce = uint_of_hex(rpc_.call("eth_getTransactionCount", {checksum_address(from), "pending"}),
                         "nonce");
  nlohmann::json estimate = {
      {"from", checksum_address(from)}, {"data", hex0x(data)}, {"value", quantity_hex(value)}};
  if (tx.to) estimate["to"] = checksum_address(*tx.to);
  // A transaction that would revert fails here, with the contract's reason.
  tx.gas = with_margin(uint_of_hex(rpc_.call("eth_estimateGas", {estimate}), "gas estimate"));
  const nlohmann::json block = rpc_.call("eth_getBlockByNumber", {"latest", false});
  if (!block.is_object() || !block.contains("baseFeePerGas"))
    fail("the chain at ", rpc_.url(), " has no base fee (EIP-1559 transactions need London)");
  const Quantity base_fee = quantity_from_hex(block["baseFeePerGas"].get<std::string>());
  try {
    tx.max_priority_fee = quantity_from_hex(
        rpc_.call("eth_maxPriorityFeePerGas", nlohmann::json::array()).get<std::string>());
  } catch (const Error&) {  // not every node has it: 1 gwei
    tx.max_priority_fee = abi_uint(1000000000);
  }
  tx.max_fee = quantity_add(quantity_times(base_fee, 2), tx.max_priority_fee);
  const std::string raw = sign_transaction(tx, key);
  const std::string hash = rpc_.call("eth_sendRawTransaction", {hex0x(raw)}).get<std::string>();
  // Wait for the receipt (a local node mines at once; a public chain takes seconds).
  nlohmann::json receipt;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while ((receipt = rpc_.call("eth_getTransactionReceipt", {hash})).is_null()) {
    if (std::chrono::steady_clock::now() > deadline)
      fail("transaction ", hash, " was not mined within 5 minutes");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  Receipt out;
  out.transaction_hash = hash;
  out.block = uint_of_hex(receipt["blockNumber"], "block number");
  out.gas_used = uint_of_hex(receipt["gasUsed"], "gas used");
  out.logs = receipt.value("logs", nlohmann::json::array());
  if (receipt.contains("contractAddress") && receipt["contractAddress"].is_string())
    out.contract = parse_address(receipt["contractAddress"].get<std::string>());
  if (uint_of_hex(receipt["status"], "status") != 1)
    fail("transaction ", hash, " reverted in block ", out.block);
  return out;
}

Receipt RegistryClient::deploy(const PrivateKey& key, const std::string& init_code) {
  const std::optional<Address> none;
  RegistryClient creator(rpc_.url(), none);
  return creator.transact(key, init_code);
}

Receipt RegistryClient::publish(const PrivateKey& key, const Address& owner, const Hash32& base,
                                const Hash32& delta, uint32_t ratio_x100, bool make_public,
                                const ChainAttestation& a, const Signature65& signature) {
  const AbiValue attestation =
      abi_list({hash(a.payload_hash), hash(a.measurement), word(abi_uint(a.epsilon_x1e6)),
                word(abi_uint(a.delta_exponent)),
                abi_bytes(std::string(reinterpret_cast<const char*>(signature.data()), 65))});
  // Sent by the owner itself: no separate owner signature.
  return transact(
      key, calldata("publishBitDelta(address,bytes32,bytes32,uint32,bool,(bytes32,"
                    "bytes32,uint64,uint8,bytes),bytes)",
                    abi_list({address(owner), hash(base), hash(delta), word(abi_uint(ratio_x100)),
                              word(abi_bool(make_public)), attestation, abi_bytes("")})));
}

Receipt RegistryClient::create_soup(const PrivateKey& key, const Hash32& adapter,
                                    const std::vector<Hash32>& deltas,
                                    const std::vector<Address>& contributors,
                                    const std::vector<uint16_t>& weights_bps,
                                    const std::string& method, const Hash32& record) {
  std::vector<AbiValue> hashes, owners, weights;
  for (const Hash32& d : deltas) hashes.push_back(hash(d));
  for (const Address& c : contributors) owners.push_back(address(c));
  for (uint16_t w : weights_bps) weights.push_back(word(abi_uint(w)));
  return transact(
      key, calldata("createDeltaSoup(bytes32,bytes32[],address[],uint16[],string,bytes32)",
                    abi_list({hash(adapter), abi_list(hashes), abi_list(owners), abi_list(weights),
                              abi_bytes(method), hash(record)})));
}

Receipt RegistryClient::set_role(const PrivateKey& key, const std::string& role, const Address& who,
                                 bool allowed) {
  if (role != "attester" && role != "aggregator")
    fail("unknown role '", role, "' (attester or aggregator)");
  const std::string function =
      role == "attester" ? "setAttester(address,bool)" : "setAggregator(address,bool)";
  return transact(key, calldata(function, abi_list({address(who), word(abi_bool(allowed))})));
}

Receipt RegistryClient::pay_royalties(const PrivateKey& key, uint64_t soup, const Quantity& wei) {
  return transact(key, calldata("payRoyalties(uint256)", abi_list({word(abi_uint(soup))})), wei);
}

Receipt RegistryClient::withdraw(const PrivateKey& key) {
  return transact(key, calldata("withdraw()", abi_list({})));
}

RegistryDelta RegistryClient::delta(const Hash32& delta_hash) const {
  const AbiValue v = abi_decode(parse_abi_type(std::string("(") + kDeltaTuple + ")"),
                                call(calldata("getDelta(bytes32)", abi_list({hash(delta_hash)}))))
                         .items[0];
  RegistryDelta d;
  d.delta_hash = delta_hash;
  d.owner = abi_to_address(v.items[0].word);
  d.base_hash = to_hash(v.items[1]);
  d.compression_ratio_x100 = uint32_t(abi_to_uint64(v.items[2].word));
  d.is_public = abi_to_uint64(v.items[3].word) != 0;
  d.epsilon_x1e6 = abi_to_uint64(v.items[4].word);
  d.delta_exponent = uint8_t(abi_to_uint64(v.items[5].word));
  d.measurement = to_hash(v.items[6]);
  d.attester = abi_to_address(v.items[7].word);
  d.published_at = abi_to_uint64(v.items[8].word);
  return d;
}

std::vector<Hash32> RegistryClient::deltas_of(const Address& owner) const {
  const AbiValue v = abi_decode(parse_abi_type("(bytes32[])"),
                                call(calldata("deltasOf(address)", abi_list({address(owner)}))));
  std::vector<Hash32> out;
  for (const AbiValue& item : v.items[0].items) out.push_back(to_hash(item));
  return out;
}

uint64_t RegistryClient::soup_count() const {
  return abi_to_uint64(
      abi_decode(parse_abi_type("(uint256)"), call(calldata("soupCount()", abi_list({}))))
          .items[0]
          .word);
}

RegistrySoup RegistryClient::soup(uint64_t id) const {
  const AbiValue v = abi_decode(parse_abi_type(std::string("(") + kSoupTuple + ")"),
                                call(calldata("getSoup(uint256)", abi_list({word(abi_uint(id))}))))
                         .items[0];
  RegistrySoup s;
  s.id = id;
  s.adapter_hash = to_hash(v.items[0]);
  s.record_hash = to_hash(v.items[1]);
  s.method = v.items[2].bytes;
  s.aggregator = abi_to_address(v.items[3].word);
  s.version = abi_to_uint64(v.items[4].word);
  s.active = abi_to_uint64(v.items[5].word) != 0;
  s.created_at = abi_to_uint64(v.items[6].word);
  s.royalties_paid = v.items[7].word;
  const AbiValue c =
      abi_decode(parse_abi_type("(bytes32[],address[],uint16[])"),
                 call(calldata("soupContributors(uint256)", abi_list({word(abi_uint(id))}))));
  for (const AbiValue& h : c.items[0].items) s.delta_hashes.push_back(to_hash(h));
  for (const AbiValue& a : c.items[1].items) s.contributors.push_back(abi_to_address(a.word));
  for (const AbiValue& w : c.items[2].items)
    s.weights_bps.push_back(uint16_t(abi_to_uint64(w.word)));
  return s;
}

Quantity RegistryClient::credits(const Address& who) const {
  return abi_decode(parse_abi_type("(uint256)"),
                    call(calldata("credits(address)", abi_list({address(who)}))))
      .items[0]
      .word;
}

std::vector<Hash32> RegistryClient::published_deltas() const {
  const Hash32 topic = event_topic(
      "DeltaPublished(bytes32,address,bytes32,uint32,bool,uint64,uint8,bytes32,address)");
  const nlohmann::json filter = {{"address", checksum_address(contract())},
                                 {"fromBlock", "0x0"},
                                 {"toBlock", "latest"},
                                 {"topics", {"0x" + to_hex(topic)}}};
  std::vector<Hash32> out;
  for (const nlohmann::json& log : rpc_.call("eth_getLogs", {filter})) {
    if (!log.contains("topics") || log["topics"].size() < 2)
      fail("a DeltaPublished log without its topics");
    const std::string bytes = bytes_of_hex(log["topics"][1], "log topic");
    if (bytes.size() != 32) fail("a DeltaPublished topic is not 32 bytes");
    Hash32 h;
    std::copy(bytes.begin(), bytes.end(), h.begin());
    out.push_back(h);
  }
  return out;
}

}  // namespace bd
