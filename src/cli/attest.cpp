// bitdelta attest keygen|measure|sign|verify: attestations binding an adapter to how it was made
// (trust/attestation.h).
#include <cstdio>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "trust/attestation.h"

namespace bd {

namespace {

const CommandSpec kKeygenSpec = {
    "attest keygen",
    "-o FILE [--json]",
    "Creates an Ed25519 key for the software attester sim-ed25519 (libsodium; file mode 0600,\n"
    "never overwriting) and prints its public key, the line a verifier's trusted-keys file needs.",
    {{"-o", "FILE", "the key file to create"}, {"--json", "", "print one JSON object"}}};
const CommandSpec kMeasureSpec = {
    "attest measure",
    "--binary FILE --config FILE",
    "The measurement of a training binary and its configuration: SHA-256 of\n"
    "\"bitdelta-measurement-1\\n\" + sha256(binary) + \"\\n\" + sha256(config) + \"\\n\".",
    {{"--binary", "FILE", "the training binary (e.g. build/bitdelta)"},
     {"--config", "FILE", "its configuration (e.g. the run's arguments or config file)"}}};
const CommandSpec kSignSpec = {
    "attest sign",
    "--key FILE --adapter FILE (--measurement HEX | --binary FILE --config FILE) -o FILE\n"
    "                [--format ed25519|eip191] [--json]",
    "Signs an attestation of ADAPTER: its tensors' fingerprint, base, owner and recorded\n"
    "privacy, the measurement, the time and a fresh nonce. The key decides the platform: an\n"
    "`attest keygen` key signs as sim-ed25519, an `id new` key as sim-eip191 (EIP-191, checkable\n"
    "on chain with ecrecover). Software signers: they prove who signed, not what ran.",
    {{"--key", "FILE", "an `attest keygen` (Ed25519) or `id new` (secp256k1) key file"},
     {"--adapter", "FILE", "the .bitdelta adapter attested"},
     {"--measurement", "HEX", "64 hex digits (see attest measure)"},
     {"--binary", "FILE", "measure this binary (with --config) instead"},
     {"--config", "FILE", "the configuration measured with --binary"},
     {"-o", "FILE", "the attestation to write (never overwritten)"},
     {"--format", "ed25519|eip191", "fail unless the key signs in this format"},
     {"--json", "", "print the attestation on stdout as well"}}};
const CommandSpec kVerifySpec = {
    "attest verify",
    "--adapter FILE --attestation FILE --trusted-keys FILE [--allowed-measurements FILE] [--json]",
    "Checks an attestation: its signer is trusted, the signature covers exactly its fields, the\n"
    "fields match the adapter file (fingerprint, base, owner, privacy) and, with a list, the\n"
    "measurement is allowed. Exit 0 when all hold, 1 with the first reason when not.",
    {{"--adapter", "FILE", "the .bitdelta adapter"},
     {"--attestation", "FILE", "the attestation (JSON)"},
     {"--trusted-keys", "FILE", "lines 'sim-ed25519 <public key hex>' or 'sim-eip191 <did:lux>'"},
     {"--allowed-measurements", "FILE", "lines of 64 hex digits"},
     {"--json", "", "print {\"valid\": ..., \"reason\": ...}"}}};

int run_keygen(int argc, char** argv) {
  const Args args(kKeygenSpec, argc, argv);
  const Ed25519Key key = new_ed25519_key();
  write_ed25519_key(args.require("-o"), key);
  const std::string line = "sim-ed25519 " + to_hex(key.public_key);
  if (args.has("--json"))
    print_json({{"platform", "sim-ed25519"}, {"public_key", to_hex(key.public_key)}});
  else
    std::printf("%s\n", line.c_str());
  return 0;
}

int run_measure(int argc, char** argv) {
  const Args args(kMeasureSpec, argc, argv);
  std::printf("%s\n", measure(args.require("--binary"), args.require("--config")).c_str());
  return 0;
}

int run_sign(int argc, char** argv) {
  const Args args(kSignSpec, argc, argv);
  const SigningKey key = read_signing_key(args.require("--key"));
  if (args.has("--format")) {
    const std::string format = args.get("--format");
    if (format != "ed25519" && format != "eip191")
      throw UsageError("--format must be ed25519 or eip191");
    if ("sim-" + format != key.platform)
      fail("--format ", format, ": the key signs as ", key.platform);
  }
  if (args.has("--measurement") == (args.has("--binary") || args.has("--config")))
    throw UsageError("give --measurement, or --binary and --config");
  Attestation attestation = describe_adapter(args.require("--adapter"));
  attestation.measurement = args.has("--measurement")
                                ? args.get("--measurement")
                                : measure(args.require("--binary"), args.require("--config"));
  if (attestation.measurement.size() != 64 ||
      attestation.measurement.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw UsageError("--measurement must be 64 lower-case hex digits");
  const std::string out = args.require("-o");
  sign_attestation(attestation, key);
  const std::string text = attestation_json(attestation).dump(2) + "\n";
  write_file_atomic(out, text, /*overwrite=*/false);
  if (args.has("--json"))
    print_json(attestation_json(attestation));
  else
    std::printf("attestation of %s signed by %s (%s) written to %s\n", attestation.adapter.c_str(),
                attestation.signer.c_str(), attestation.platform.c_str(), out.c_str());
  return 0;
}

int run_verify(int argc, char** argv) {
  const Args args(kVerifySpec, argc, argv);
  const std::string adapter = args.require("--adapter");
  const Attestation attestation = parse_attestation(read_file(args.require("--attestation")));
  const TrustedKeys trusted = read_trusted_keys(args.require("--trusted-keys"));
  std::vector<std::string> measurements;
  if (args.has("--allowed-measurements"))
    measurements = read_measurements(args.get("--allowed-measurements"));
  std::string reason;
  try {
    verify_attestation(attestation, adapter, trusted,
                       args.has("--allowed-measurements") ? &measurements : nullptr);
  } catch (const Error& e) {
    reason = e.what();
  }
  if (args.has("--json")) {
    print_json({{"valid", reason.empty()},
                {"reason", reason},
                {"signer", attestation.signer},
                {"platform", attestation.platform}});
  } else if (reason.empty()) {
    std::printf("verified: %s attests adapter %s (%s)\n", attestation.signer.c_str(),
                attestation.adapter.c_str(), attestation.platform.c_str());
  } else {
    std::fprintf(stderr, "bitdelta attest: rejected: %s\n", reason.c_str());
  }
  return reason.empty() ? 0 : 1;
}

}  // namespace

int run_attest(int argc, char** argv) {
  return run_subcommand(
      "attest",
      {{"keygen", run_keygen, "create an Ed25519 key of the software attester sim-ed25519"},
       {"measure", run_measure, "the measurement of a training binary and its configuration"},
       {"sign", run_sign, "sign an attestation of an adapter"},
       {"verify", run_verify, "check an attestation against an adapter and trusted keys"}},
      argc, argv);
}

}  // namespace bd
