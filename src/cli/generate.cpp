// bitdelta generate: sample a continuation of a prompt.
#include <chrono>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/model_loading.h"
#include "cli/output.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/checkpoint.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model/tokenizer.h"

namespace bd {

namespace {

const CommandSpec kSpec = {
    "generate",
    "[--model DIR] [--delta FILE] --prompt TEXT [-n N] [--temperature T] [--top-k K] [--top-p P] "
    "[--seed S] "
    "[--json]",
    "Encodes the prompt with the model's tokenizer (adding its special tokens, e.g. BOS) and\n"
    "samples up to N new tokens, stopping early at the end-of-sequence token. Without --json the\n"
    "continuation streams to stdout as it is generated.",
    {
        {"--model", "DIR", "Hugging Face model folder (default: the embedded default model)"},
        {"--delta", "FILE",
         "BitDelta adapter for that model, run inside the forward (W·x + γ ⊙ (S·x)), never merged"},
        {"--prompt", "TEXT", "the text to continue"},
        {"-n", "N", "tokens to generate (default 128)"},
        {"--temperature", "T", "softmax temperature; 0 = greedy (default 0.8)"},
        {"--top-k", "K", "sample among the K most likely tokens; 0 = all (default 40)"},
        {"--top-p", "P", "sample within the smallest set of probability >= P (default 0.95)"},
        {"--seed", "S", "random seed (default 0)"},
        {"--threads", "N", "threads (default: all cores)"},
        {"--json", "", "print one JSON object: {\"text\", \"tokens\", ...}"},
    },
};

}  // namespace

int run_generate(int argc, char** argv) {
  Args args(kSpec, argc, argv);
  const std::string prompt = args.require("--prompt");
  const int64_t max_new = args.get_int("-n", 128);
  if (max_new < 0) throw UsageError("-n must be >= 0");
  SamplerOptions options;
  options.temperature = float(args.get_double("--temperature", 0.8));
  options.top_k = int(args.get_int("--top-k", 40));
  options.top_p = float(args.get_double("--top-p", 0.95));
  options.seed = uint64_t(args.get_int("--seed", 0));
  Sampler sampler(options);
  set_threads(int(args.get_int("--threads", 0)));
  const bool json = args.has("--json");

  const LoadedModel model(args, /*copy_for_decode=*/true);
  const Checkpoint& checkpoint = model.checkpoint;
  const LlamaWeights& weights = model.weights;
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer_for_model(checkpoint.dir());
  std::vector<int32_t> prompt_ids = tokenizer->encode(prompt, true);
  if (prompt_ids.empty()) fail("the prompt encodes to no tokens");
  const int64_t vocab = weights.config.vocab_size;
  for (int32_t id : prompt_ids)
    if (id >= vocab) fail("prompt token ", id, " is outside the model's vocabulary of ", vocab);
  const int64_t max_positions = weights.config.max_position_embeddings;
  if (int64_t(prompt_ids.size()) + max_new > max_positions)
    fail("prompt (", prompt_ids.size(), " tokens) + -n ", max_new,
         " exceeds the model's context of ", max_positions, " positions");
  const int64_t eos =
      weights.config.eos_token_id >= 0 ? weights.config.eos_token_id : tokenizer->eos_id();

  KVCache cache(weights.config, int64_t(prompt_ids.size()) + max_new);
  std::vector<float> logits(static_cast<size_t>(vocab));
  auto start = std::chrono::steady_clock::now();
  const LlamaDelta* delta = model.delta_or_null();
  // Prompts take the lookups as the server's steps do (same answers through both).
  forward(weights, cache, prompt_ids.data(), int64_t(prompt_ids.size()), logits.data(), false,
          delta, generate_lookup_max_tokens());
  auto first_token = std::chrono::steady_clock::now();

  std::vector<int32_t> generated;
  size_t printed_bytes = 0;
  for (int64_t i = 0; i < max_new; ++i) {
    int32_t token = sampler.sample(logits.data(), vocab);
    if (token == eos) break;
    generated.push_back(token);
    if (!json) {  // stream the bytes decoded so far beyond what is already printed
      std::string text = tokenizer->decode(generated);
      if (text.size() > printed_bytes) {
        std::fwrite(text.data() + printed_bytes, 1, text.size() - printed_bytes, stdout);
        std::fflush(stdout);
        printed_bytes = text.size();
      }
    }
    if (i + 1 < max_new)
      forward(weights, cache, &token, 1, logits.data(), false, delta, generate_lookup_max_tokens());
  }
  auto end = std::chrono::steady_clock::now();
  const double decode_seconds = std::chrono::duration<double>(end - first_token).count();
  const double prefill_seconds = std::chrono::duration<double>(first_token - start).count();

  if (json) {
    nlohmann::json out = {{"text", tokenizer->decode(generated)},
                          {"tokens", generated},
                          {"prompt_tokens", prompt_ids.size()},
                          {"prefill_seconds", prefill_seconds},
                          {"decode_tokens_per_second",
                           decode_seconds > 0 ? double(generated.size()) / decode_seconds : 0.0}};
    if (model.adapter) out["delta"] = model.adapter->path();
    print_json(out);
  } else {
    std::printf("\n");
  }
  return 0;
}

}  // namespace bd
