// bitdelta registry deploy|allow|publish|soup|pay|withdraw|list|show: the BitDeltaRegistry
// contract on an EVM node (registry/registry_client.h, docs/registry.md).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "io/adapter.h"
#include "registry/registry_client.h"
#include "soup/attribution.h"
#include "trust/attestation.h"
#include "trust/did.h"

namespace bd {

namespace {

const Option kRpc = {"--rpc", "URL", "the node's JSON-RPC endpoint, e.g. http://127.0.0.1:8545"};
const Option kContract = {"--contract", "ADDR", "the registry contract's address"};
const Option kKey = {"--key", "FILE", "key file of `bitdelta id new` that signs and pays"};
const Option kJson = {"--json", "", "print one JSON object"};

const CommandSpec kDeploySpec = {
    "registry deploy",
    "--rpc URL --key FILE --artifact FILE [--json]",
    "Deploys the registry contract from its compiled artifact (JSON with \"bytecode\"; made by\n"
    "`node scripts/compile_contracts.mjs`). The key becomes the registry's admin.",
    {kRpc, kKey, {"--artifact", "FILE", "compiled contract: JSON with \"bytecode\""}, kJson}};
const CommandSpec kAllowSpec = {
    "registry allow",
    "--rpc URL --contract ADDR --key FILE (--attester WHO | --aggregator WHO) [--revoke] [--json]",
    "The admin allows (or with --revoke, stops allowing) an attester, whose signed attestations\n"
    "admit deltas, or an aggregator, who may record soups. WHO: a did:lux or an address.",
    {kRpc,
     kContract,
     kKey,
     {"--attester", "WHO", "did:lux:<chain>:0x… or 0x…"},
     {"--aggregator", "WHO", "did:lux:<chain>:0x… or 0x…"},
     {"--revoke", "", "remove instead of add"},
     kJson}};
const CommandSpec kPublishSpec = {
    "registry publish",
    "--rpc URL --contract ADDR --key FILE --adapter FILE --attestation FILE [--public] [--json]",
    "Publishes an adapter: its fingerprint, its base's, its compression ratio and the privacy\n"
    "its sim-eip191 attestation records. The key must be the adapter's owner (the contract\n"
    "checks the attester is on its allow-list). --public lets soups include it.",
    {kRpc,
     kContract,
     kKey,
     {"--adapter", "FILE", "the .bitdelta adapter"},
     {"--attestation", "FILE", "its attestation (`bitdelta attest sign --format eip191`)"},
     {"--public", "", "make the delta public (soups may include it)"},
     kJson}};
const CommandSpec kSoupSpec = {
    "registry soup",
    "--rpc URL --contract ADDR --key FILE --soup FILE [--json]",
    "Records a soup made by `bitdelta soup`: its fingerprint, its inputs' fingerprints and "
    "owners,\n"
    "their weights (the soup's --attribution basis points, else equal shares summing to 10000),\n"
    "its method and the keccak256 of its aggregation record. The key must be an aggregator.",
    {kRpc, kContract, kKey, {"--soup", "FILE", "the soup adapter"}, kJson}};
const CommandSpec kPaySpec = {
    "registry pay",
    "--rpc URL --contract ADDR --key FILE --soup ID --wei N [--json]",
    "Pays N wei of royalties to soup ID: each contributor is credited by its weight.",
    {kRpc, kContract, kKey, {"--soup", "ID", "soup id"}, {"--wei", "N", "amount in wei"}, kJson}};
const CommandSpec kWithdrawSpec = {"registry withdraw",
                                   "--rpc URL --contract ADDR --key FILE [--json]",
                                   "Withdraws the key's royalty credit.",
                                   {kRpc, kContract, kKey, kJson}};
const CommandSpec kListSpec = {
    "registry list",
    "--rpc URL --contract ADDR [--owner WHO] [--json]",
    "Lists published deltas (from the DeltaPublished events, or the views for --owner) and soups.",
    {kRpc, kContract, {"--owner", "WHO", "only this owner's deltas"}, kJson}};
const CommandSpec kShowSpec = {"registry show",
                               "--rpc URL --contract ADDR (--delta HASH | --soup ID) [--json]",
                               "Shows one delta or soup as the contract records it.",
                               {kRpc,
                                kContract,
                                {"--delta", "HASH", "the delta's fingerprint (64 hex)"},
                                {"--soup", "ID", "soup id"},
                                kJson}};

Address address_or_did(const std::string& text) {
  if (text.rfind("did:", 0) == 0) return parse_lux_did(text).address;
  return parse_address(text);
}

std::string hex0x(const Hash32& h) {
  return "0x" + to_hex(h);
}

RegistryClient client_of(const Args& args) {
  return RegistryClient(args.require("--rpc"), parse_address(args.require("--contract")));
}

// The key, after checking that its identity lives on the node's chain.
KeyFile signer_of(const Args& args, const RegistryClient& client) {
  const KeyFile key = read_key_file(args.require("--key"));
  const uint64_t chain = abi_to_uint64(quantity_from_hex(
      client.rpc().call("eth_chainId", nlohmann::json::array()).get<std::string>()));
  if (key.did.chain_id != chain)
    fail("the key's identity ", key.did.str(), " is on chain ", key.did.chain_id, ", the node at ",
         args.get("--rpc"), " is chain ", chain);
  return key;
}

void report(const Args& args, const std::string& what, const Receipt& receipt,
            nlohmann::json extra = nlohmann::json::object()) {
  extra["transaction"] = receipt.transaction_hash;
  extra["block"] = receipt.block;
  extra["gas_used"] = receipt.gas_used;
  if (args.has("--json")) {
    print_json(extra);
  } else {
    std::printf("%s: transaction %s, block %llu, gas %llu\n", what.c_str(),
                receipt.transaction_hash.c_str(), (unsigned long long)receipt.block,
                (unsigned long long)receipt.gas_used);
  }
}

int run_deploy(int argc, char** argv) {
  const Args args(kDeploySpec, argc, argv);
  RegistryClient client(args.require("--rpc"), std::nullopt);
  const KeyFile key = signer_of(args, client);
  nlohmann::json artifact;
  try {
    artifact = nlohmann::json::parse(read_file(args.require("--artifact")));
  } catch (const nlohmann::json::exception&) {
    fail(args.get("--artifact"), ": not JSON");
  }
  if (!artifact.contains("bytecode") || !artifact["bytecode"].is_string())
    fail(args.get("--artifact"), ": no \"bytecode\" string");
  const std::vector<uint8_t> code = from_hex(artifact["bytecode"].get<std::string>());
  const Receipt receipt = client.deploy(key.key, std::string(code.begin(), code.end()));
  if (!receipt.contract) fail("the deployment's receipt names no contract address");
  const std::string address = checksum_address(*receipt.contract);
  if (!args.has("--json")) std::printf("registry deployed at %s\n", address.c_str());
  report(args, "deploy", receipt, {{"contract", address}, {"admin", key.did.str()}});
  return 0;
}

int run_allow(int argc, char** argv) {
  const Args args(kAllowSpec, argc, argv);
  if (args.has("--attester") == args.has("--aggregator"))
    throw UsageError("give exactly one of --attester and --aggregator");
  RegistryClient client = client_of(args);
  const KeyFile key = signer_of(args, client);
  const std::string role = args.has("--attester") ? "attester" : "aggregator";
  const Address who = address_or_did(args.get("--" + role));
  const bool allowed = !args.has("--revoke");
  const Receipt receipt = client.set_role(key.key, role, who, allowed);
  report(args, (allowed ? "allowed " : "revoked ") + role + " " + checksum_address(who), receipt,
         {{"role", role}, {"address", checksum_address(who)}, {"allowed", allowed}});
  return 0;
}

int run_publish(int argc, char** argv) {
  const Args args(kPublishSpec, argc, argv);
  RegistryClient client = client_of(args);
  const KeyFile key = signer_of(args, client);
  const std::string adapter_path = args.require("--adapter");
  const Attestation attestation = parse_attestation(read_file(args.require("--attestation")));
  if (attestation.platform != "sim-eip191")
    fail("the contract checks sim-eip191 attestations; this one is ", attestation.platform);
  const std::string fingerprint = adapter_fingerprint(adapter_path);
  if (attestation.adapter != fingerprint)
    fail("the attestation is of adapter ", attestation.adapter, ", not of ", adapter_path, " (",
         fingerprint, ")");
  const ChainAttestation chain = chain_attestation(attestation);
  if (chain.owner != key.did.address)
    fail("the key ", key.did.str(), " is not the adapter's owner (", attestation.owner, ")");
  const AdapterFile adapter(adapter_path);
  const AdapterSizes sizes = adapter_sizes(adapter.matrices(), adapter.exact());
  const double ratio =
      sizes.ratio_changed_vs_fp16(int64_t(std::filesystem::file_size(adapter_path)));
  const uint32_t ratio_x100 = uint32_t(std::min(4e9, std::round(ratio * 100)));
  const Receipt receipt =
      client.publish(key.key, key.did.address, chain.base, chain.adapter, ratio_x100,
                     args.has("--public"), chain, parse_signature(attestation.signature));
  report(args, "published delta 0x" + fingerprint, receipt,
         {{"delta", "0x" + fingerprint},
          {"owner", key.did.str()},
          {"compression_ratio_x100", ratio_x100},
          {"public", args.has("--public")}});
  return 0;
}

int run_record_soup(int argc, char** argv) {
  const Args args(kSoupSpec, argc, argv);
  RegistryClient client = client_of(args);
  const KeyFile key = signer_of(args, client);
  const std::string path = args.require("--soup");
  const AdapterFile soup(path);
  const std::map<std::string, std::string>& extra = soup.info().extra;
  if (!extra.count("soup.method") || !extra.count("soup.inputs"))
    fail(path, " is not a soup of `bitdelta soup` (no soup.method / soup.inputs metadata)");
  const nlohmann::json inputs = nlohmann::json::parse(extra.at("soup.inputs"));
  std::vector<Hash32> deltas;
  std::vector<Address> owners;
  for (const nlohmann::json& input : inputs) {
    deltas.push_back(
        hash32_from_hex("input fingerprint", input.at("fingerprint").get<std::string>()));
    const std::string owner = input.at("owner");
    try {
      owners.push_back(parse_lux_did(owner).address);
    } catch (const Error& e) {
      fail("input ", input.at("fingerprint").get<std::string>(), " has no did:lux account owner ('",
           owner, "'): ", e.what());
    }
  }
  std::vector<int64_t> bps = to_basis_points(std::vector<double>(deltas.size(), 1.0));
  if (extra.count("soup.attribution")) {
    const nlohmann::json attribution = nlohmann::json::parse(extra.at("soup.attribution"));
    bps.clear();
    for (const nlohmann::json& c : attribution.at("contributors"))
      bps.push_back(c.at("basis_points").get<int64_t>());
    if (bps.size() != deltas.size()) fail(path, ": the attribution does not list every input");
  }
  // The aggregation record: every soup.* entry of the metadata, as compact JSON (sorted keys).
  nlohmann::json record = nlohmann::json::object();
  for (const auto& [name, value] : extra)
    if (name.rfind("soup.", 0) == 0) record[name] = value;
  const Hash32 record_hash = keccak256(record.dump());
  const Hash32 adapter_hash = hash32_from_hex("soup fingerprint", adapter_fingerprint(path));
  std::vector<uint16_t> weights(bps.begin(), bps.end());
  const Receipt receipt = client.create_soup(key.key, adapter_hash, deltas, owners, weights,
                                             extra.at("soup.method"), record_hash);
  uint64_t soup_id = 0;
  for (const nlohmann::json& log : receipt.logs)
    if (log["topics"].size() > 1 &&
        log["topics"][0] == hex0x(event_topic("SoupCreated(uint256,bytes32,address,string,uint32,"
                                              "bytes32,uint256)")))
      soup_id = abi_to_uint64(quantity_from_hex(log["topics"][1].get<std::string>()));
  report(args, "recorded soup " + std::to_string(soup_id), receipt,
         {{"soup", soup_id},
          {"adapter", hex0x(adapter_hash)},
          {"aggregation_record", hex0x(record_hash)},
          {"weights_bps", bps}});
  return 0;
}

int run_pay(int argc, char** argv) {
  const Args args(kPaySpec, argc, argv);
  RegistryClient client = client_of(args);
  const KeyFile key = signer_of(args, client);
  const long long soup = args.get_int("--soup", 0);
  if (soup < 1) throw UsageError("--soup must be a soup id (1, 2, ...)");
  const Quantity wei = quantity_from_decimal(args.require("--wei"));
  const Receipt receipt = client.pay_royalties(key.key, uint64_t(soup), wei);
  report(args, "paid " + quantity_decimal(wei) + " wei to soup " + std::to_string(soup), receipt,
         {{"soup", soup}, {"wei", quantity_decimal(wei)}});
  return 0;
}

int run_withdraw(int argc, char** argv) {
  const Args args(kWithdrawSpec, argc, argv);
  RegistryClient client = client_of(args);
  const KeyFile key = signer_of(args, client);
  const Quantity owed = client.credits(key.did.address);
  const Receipt receipt = client.withdraw(key.key);
  report(args, "withdrew " + quantity_decimal(owed) + " wei", receipt,
         {{"wei", quantity_decimal(owed)}});
  return 0;
}

std::string epsilon_text(uint64_t epsilon_x1e6) {
  if (epsilon_x1e6 == kNoEpsilon) return "none";
  char text[64];
  std::snprintf(text, sizeof text, "%.6g", double(epsilon_x1e6) / 1e6);
  return text;
}

nlohmann::json delta_json(const RegistryDelta& d) {
  return {{"delta", hex0x(d.delta_hash)},
          {"owner", checksum_address(d.owner)},
          {"base", hex0x(d.base_hash)},
          {"compression_ratio", double(d.compression_ratio_x100) / 100},
          {"public", d.is_public},
          {"epsilon", d.epsilon_x1e6 == kNoEpsilon ? nlohmann::json(nullptr)
                                                   : nlohmann::json(double(d.epsilon_x1e6) / 1e6)},
          {"delta_exponent", d.delta_exponent},
          {"measurement", hex0x(d.measurement)},
          {"attester", checksum_address(d.attester)},
          {"published_at", d.published_at}};
}

nlohmann::json soup_json(const RegistrySoup& s) {
  nlohmann::json contributors = nlohmann::json::array();
  for (size_t i = 0; i < s.contributors.size(); ++i)
    contributors.push_back({{"delta", hex0x(s.delta_hashes[i])},
                            {"owner", checksum_address(s.contributors[i])},
                            {"weight_bps", s.weights_bps[i]}});
  return {{"soup", s.id},
          {"adapter", hex0x(s.adapter_hash)},
          {"method", s.method},
          {"version", s.version},
          {"aggregator", checksum_address(s.aggregator)},
          {"active", s.active},
          {"aggregation_record", hex0x(s.record_hash)},
          {"royalties_paid_wei", quantity_decimal(s.royalties_paid)},
          {"created_at", s.created_at},
          {"contributors", contributors}};
}

void print_delta(const RegistryDelta& d) {
  std::printf("delta %s  owner %s  %s  ratio %.2fx  epsilon %s  attester %s\n",
              hex0x(d.delta_hash).c_str(), checksum_address(d.owner).c_str(),
              d.is_public ? "public " : "private", d.compression_ratio_x100 / 100.0,
              epsilon_text(d.epsilon_x1e6).c_str(), checksum_address(d.attester).c_str());
}

void print_soup(const RegistrySoup& s) {
  std::printf("soup %llu  %s v%llu  %s  adapter %s  royalties %s wei\n", (unsigned long long)s.id,
              s.method.c_str(), (unsigned long long)s.version, s.active ? "active" : "inactive",
              hex0x(s.adapter_hash).c_str(), quantity_decimal(s.royalties_paid).c_str());
  for (size_t i = 0; i < s.contributors.size(); ++i)
    std::printf("  %5u bp  %s  delta %s\n", unsigned(s.weights_bps[i]),
                checksum_address(s.contributors[i]).c_str(), hex0x(s.delta_hashes[i]).c_str());
}

int run_list(int argc, char** argv) {
  const Args args(kListSpec, argc, argv);
  const RegistryClient client = client_of(args);
  const std::vector<Hash32> hashes = args.has("--owner")
                                         ? client.deltas_of(address_or_did(args.get("--owner")))
                                         : client.published_deltas();
  nlohmann::json deltas = nlohmann::json::array(), soups = nlohmann::json::array();
  for (const Hash32& h : hashes) {
    const RegistryDelta d = client.delta(h);
    if (args.has("--json"))
      deltas.push_back(delta_json(d));
    else
      print_delta(d);
  }
  const uint64_t count = client.soup_count();
  for (uint64_t id = 1; id <= count; ++id) {
    const RegistrySoup s = client.soup(id);
    if (args.has("--json"))
      soups.push_back(soup_json(s));
    else
      print_soup(s);
  }
  if (args.has("--json")) print_json({{"deltas", deltas}, {"soups", soups}});
  return 0;
}

int run_show(int argc, char** argv) {
  const Args args(kShowSpec, argc, argv);
  if (args.has("--delta") == args.has("--soup"))
    throw UsageError("give exactly one of --delta and --soup");
  const RegistryClient client = client_of(args);
  if (args.has("--delta")) {
    const RegistryDelta d = client.delta(hash32_from_hex("--delta", args.get("--delta")));
    if (args.has("--json"))
      print_json(delta_json(d));
    else
      print_delta(d);
    return 0;
  }
  const long long id = args.get_int("--soup", 0);
  if (id < 1) throw UsageError("--soup must be a soup id (1, 2, ...)");
  const RegistrySoup s = client.soup(uint64_t(id));
  if (args.has("--json"))
    print_json(soup_json(s));
  else
    print_soup(s);
  return 0;
}

}  // namespace

int run_registry(int argc, char** argv) {
  return run_subcommand(
      "registry",
      {{"deploy", run_deploy, "deploy the registry contract (the key becomes its admin)"},
       {"allow", run_allow, "admin: allow or revoke an attester or an aggregator"},
       {"publish", run_publish, "publish an adapter with its attestation"},
       {"soup", run_record_soup, "record a soup with its contributors and weights"},
       {"pay", run_pay, "pay royalties to a soup's contributors"},
       {"withdraw", run_withdraw, "withdraw the key's royalty credit"},
       {"list", run_list, "list published deltas and soups"},
       {"show", run_show, "show one delta or soup"}},
      argc, argv);
}

}  // namespace bd
