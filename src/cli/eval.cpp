// bitdelta eval: mean negative log-likelihood and perplexity of a model on text or token ids.
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/model_loading.h"
#include "cli/output.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/progress.h"
#include "core/threads.h"
#include "eval/perplexity.h"
#include "io/checkpoint.h"
#include "model/tokenizer.h"

namespace bd {

namespace {

const CommandSpec kSpec = {
    "eval",
    "[--model DIR] [--delta FILE] (--data TEXTFILE | --tokens IDSFILE) [--context N] [--json]",
    "Cuts the token sequence into consecutive non-overlapping windows of --context tokens and\n"
    "predicts every token after the first of each window from the ones before it. Prints the\n"
    "number of predicted tokens, their mean negative log-likelihood (nats) and perplexity.",
    {
        {"--model", "DIR", "Hugging Face model folder (default: the embedded default model)"},
        {"--delta", "FILE",
         "BitDelta adapter for that model, run inside the forward (W·x + γ ⊙ (S·x)), never merged"},
        {"--data", "TEXTFILE", "text to evaluate, tokenized with the model's tokenizer.json"},
        {"--tokens", "IDSFILE", "whitespace-separated token ids (needs no tokenizer)"},
        {"--context", "N", "window length in tokens (default: max_position_embeddings)"},
        {"--threads", "N", "threads (default: all cores)"},
        {"--json", "", "print one JSON object"},
    },
};

// Reads whitespace-separated token ids and checks each against the vocabulary.
std::vector<int32_t> read_token_ids(const std::string& path, int64_t vocab) {
  std::string text = read_file(path);
  std::vector<int32_t> ids;
  const char* cursor = text.c_str();
  const char* end = cursor + text.size();
  while (true) {
    while (cursor < end && std::isspace(static_cast<unsigned char>(*cursor))) ++cursor;
    if (cursor >= end) break;
    char* after = nullptr;
    errno = 0;
    long long id = std::strtoll(cursor, &after, 10);
    if (after == cursor || (after < end && !std::isspace(static_cast<unsigned char>(*after))))
      fail(path, ": token ", ids.size(), " is not an integer");
    if (errno == ERANGE || id < 0 || id >= vocab)
      fail(path, ": token id ", quote_bytes(std::string_view(cursor, size_t(after - cursor))),
           " at position ", ids.size(), " is outside the vocabulary [0, ", vocab, ")");
    ids.push_back(int32_t(id));
    cursor = after;
  }
  return ids;
}

}  // namespace

int run_eval(int argc, char** argv) {
  Args args(kSpec, argc, argv);
  if (args.has("--data") == args.has("--tokens"))
    throw UsageError("give exactly one of --data TEXTFILE or --tokens IDSFILE");
  set_threads(int(args.get_int("--threads", 0)));
  const bool json = args.has("--json");

  const LoadedModel model(args);
  const Checkpoint& checkpoint = model.checkpoint;
  const LlamaWeights& weights = model.weights;
  const int64_t context = args.get_int("--context", weights.config.max_position_embeddings);
  if (context < 2) throw UsageError("--context must be at least 2");

  std::vector<int32_t> ids;
  std::string source;
  if (args.has("--tokens")) {
    source = args.get("--tokens");
    ids = read_token_ids(source, weights.config.vocab_size);
  } else {
    source = args.get("--data");
    std::string text = read_file(source);
    ids = load_tokenizer_for_model(checkpoint.dir())->encode(text, false);
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] >= weights.config.vocab_size)
        fail(source, ": the tokenizer produced id ", ids[i], " at position ", i,
             ", outside the model's vocabulary of ", weights.config.vocab_size);
  }
  if (ids.size() < 2) fail(source, ": needs at least 2 tokens to predict one, got ", ids.size());

  Progress progress("eval", int64_t(ids.size()), "tok", json);
  NllResult result = evaluate_nll(weights, model.delta_or_null(), ids, context,
                                  [&](int64_t done) { progress.update(done); });
  progress.finish();
  if (result.predicted == 0) fail(source, ": no token to predict with --context ", context);

  const double nll = result.mean_nll();
  if (json) {
    nlohmann::json out = {{"tokens", result.predicted}, {"nll", nll},
                          {"ppl", std::exp(nll)},       {"context", context},
                          {"model", checkpoint.dir()},  {"source", source}};
    if (model.adapter) out["delta"] = model.adapter->path();
    print_json(out);
  } else {
    std::printf("%s: %lld tokens predicted, nll %.4f nats/token, ppl %.3f\n", source.c_str(),
                (long long)result.predicted, nll, std::exp(nll));
  }
  return 0;
}

}  // namespace bd
