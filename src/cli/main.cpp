// bitdelta: one binary, one subcommand per file. Errors: one line on stderr, non-zero exit.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int argc, char** argv);
  const char* summary;
};

// clang-format off
const std::vector<Command> kCommands = {
    {"apply",    bd::run_apply,    "write base + adapter as a dense checkpoint folder"},
    {"attest",   bd::run_attest,   "attestations binding an adapter to how it was made: keygen, measure, sign, verify"},
    {"compress", bd::run_compress, "compress a fine-tune into a BitDelta adapter (1-bit signs + scales)"},
    {"eval",     bd::run_eval,     "mean NLL and perplexity of a model on text or token ids"},
    {"generate", bd::run_generate, "generate text from a prompt"},
    {"id",       bd::run_id,       "did:lux identities: new keys, addresses, EIP-191 signatures and their verification"},
    {"inspect",  bd::run_inspect,  "show a checkpoint's or safetensors file's tensors, metadata and fingerprint"},
    {"privacy",  bd::run_privacy,  "differential privacy accounting: epsilon of DP-SGD runs, noise for a target epsilon"},
    {"registry", bd::run_registry, "the on-chain registry: publish deltas and soups, royalties (BitDeltaRegistry on an EVM node)"},
    {"safety",   bd::run_safety,   "safety suites by log-likelihood (multiple choice, preferences, canaries) and the gate"},
    {"screen",   bd::run_screen,   "flag adapters that look unlike the others (poisoning and backdoor screening)"},
    {"serve",    bd::run_serve,    "OpenAI-compatible server: the base and many users' adapters, batched together"},
    {"soup",     bd::run_soup,     "aggregate many users' adapters of one base into one (robust rules, reproducible)"},
    {"tokenize", bd::run_tokenize, "text to token ids and back with a model's tokenizer.json"},
    {"train",    bd::run_train,    "train or fine-tune a model on a text file (AdamW, held-out evaluation)"},
};
// clang-format on

void print_usage(std::FILE* out) {
  std::fprintf(out, "bitdelta %s: cheap, private, poolable per-user fine-tunes of one base LLM\n\n",
               BITDELTA_VERSION);
  std::fprintf(out,
               "usage: bitdelta <command> [options]   (bitdelta <command> --help for details)\n\n");
  for (const Command& command : kCommands)
    std::fprintf(out, "  %-10s %s\n", command.name, command.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("bitdelta %s\n", BITDELTA_VERSION);
    return 0;
  }
  for (const Command& command : kCommands) {
    if (std::strcmp(argv[1], command.name) != 0) continue;
    try {
      return command.run(argc - 2, argv + 2);
    } catch (const bd::UsageError& error) {
      std::fprintf(stderr, "bitdelta %s: %s\n", command.name, error.what());
      return 2;
    } catch (const std::exception& error) {
      std::fprintf(stderr, "bitdelta %s: error: %s\n", command.name, error.what());
      return 1;
    }
  }
  std::fprintf(stderr, "bitdelta: unknown command '%s' (bitdelta --help lists them)\n", argv[1]);
  return 2;
}
