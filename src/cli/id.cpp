// bitdelta id new|address|sign|verify: did:lux identities (trust/did.h) and EIP-191 ownership
// proofs (trust/ethereum.h).
#include <cstdio>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "trust/did.h"

namespace bd {

namespace {

const Option kKeyOption = {"--key", "FILE", "key file of `bitdelta id new`"};
const Option kMessageOption = {"--message", "TEXT", "the message (UTF-8 text as given)"};
const Option kFileOption = {"--file", "FILE", "the message: a file's bytes"};
const Option kJsonOption = {"--json", "", "print one JSON object"};

const CommandSpec kNewSpec = {
    "id new",
    "-o FILE --chain-id N [--json]",
    "Creates a secp256k1 key (libsodium's random generator) and writes it to FILE (mode 0600,\n"
    "never overwriting), with its identity did:lux:<chain id>:<EIP-55 address>.",
    {{"-o", "FILE", "the key file to create"},
     {"--chain-id", "N", "EVM chain id the identity lives on (a positive integer)"},
     kJsonOption},
};
const CommandSpec kAddressSpec = {"id address",
                                  "--key FILE [--json]",
                                  "The did:lux and address of a key file.",
                                  {kKeyOption, kJsonOption}};
const CommandSpec kSignSpec = {
    "id sign",
    "--key FILE (--message TEXT | --file FILE) [--json]",
    "Signs a message as EIP-191 personal_sign does (keccak256 of \"\\x19Ethereum Signed "
    "Message:\\n\"\n+ length + message, deterministic low-s ECDSA): the 65-byte signature r, s, v "
    "in hex,\nwhich ethers' verifyMessage and Solidity's ecrecover accept.",
    {kKeyOption, kMessageOption, kFileOption, kJsonOption}};
const CommandSpec kVerifySpec = {
    "id verify",
    "--did DID --signature HEX (--message TEXT | --file FILE) [--json]",
    "Checks that DID's key signed the message (EIP-191): recovers the signer's address and\n"
    "compares it with the DID's. Exit 0 when it did, 1 with the reason when not.",
    {{"--did", "DID", "the claimed signer, did:lux:<chain id>:0x<40 hex>"},
     {"--signature", "HEX", "0x + 130 hex digits (r, s, v)"},
     kMessageOption,
     kFileOption,
     kJsonOption}};

std::string message_of(const Args& args) {
  if (args.has("--message") == args.has("--file"))
    throw UsageError("give exactly one of --message and --file");
  return args.has("--message") ? args.get("--message") : read_file(args.get("--file"));
}

void print_identity(const LuxDid& did, bool json, const std::string& path = "") {
  if (json) {
    nlohmann::json out = {
        {"did", did.str()}, {"address", checksum_address(did.address)}, {"chain_id", did.chain_id}};
    if (!path.empty()) out["key_file"] = path;
    print_json(out);
  } else {
    std::printf("%s\n", did.str().c_str());
  }
}

int run_new(int argc, char** argv) {
  const Args args(kNewSpec, argc, argv);
  args.require("--chain-id");
  const long long chain = args.get_int("--chain-id", 0);
  if (chain < 1) throw UsageError("--chain-id must be a positive integer");
  KeyFile key_file;
  key_file.key = new_private_key();
  key_file.did = {uint64_t(chain), address_of(key_file.key)};
  write_key_file(args.require("-o"), key_file);
  print_identity(key_file.did, args.has("--json"), args.get("-o"));
  return 0;
}

int run_address(int argc, char** argv) {
  const Args args(kAddressSpec, argc, argv);
  print_identity(read_key_file(args.require("--key")).did, args.has("--json"));
  return 0;
}

int run_sign(int argc, char** argv) {
  const Args args(kSignSpec, argc, argv);
  const KeyFile key_file = read_key_file(args.require("--key"));
  const std::string signature =
      "0x" + to_hex(sign_personal_message(key_file.key, message_of(args)));
  if (args.has("--json"))
    print_json({{"did", key_file.did.str()}, {"signature", signature}});
  else
    std::printf("%s\n", signature.c_str());
  return 0;
}

int run_verify(int argc, char** argv) {
  const Args args(kVerifySpec, argc, argv);
  const LuxDid did = parse_lux_did(args.require("--did"));
  const Signature65 signature = parse_signature(args.require("--signature"));
  const Address signer = recover_personal_message(message_of(args), signature);
  const bool valid = signer == did.address;
  if (args.has("--json")) {
    print_json({{"valid", valid}, {"did", did.str()}, {"signer", checksum_address(signer)}});
  } else if (valid) {
    std::printf("valid: signed by %s\n", did.str().c_str());
  } else {
    std::fprintf(stderr, "bitdelta id: invalid: signed by %s, not by %s\n",
                 checksum_address(signer).c_str(), did.str().c_str());
  }
  return valid ? 0 : 1;
}

}  // namespace

int run_id(int argc, char** argv) {
  return run_subcommand("id",
                        {{"new", run_new, "create a secp256k1 key and its did:lux identity"},
                         {"address", run_address, "the did:lux and address of a key file"},
                         {"sign", run_sign, "sign a message (EIP-191 personal_sign)"},
                         {"verify", run_verify, "check that a did:lux signed a message"}},
                        argc, argv);
}

}  // namespace bd
