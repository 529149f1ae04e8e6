// bitdelta train: fine-tune a model folder, or train a config from scratch, on a text file;
// writes the result as a Hugging Face folder (F32 safetensors) with the run recorded in its
// metadata.
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "cli/private_training.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/progress.h"
#include "core/threads.h"
#include "io/checkpoint.h"
#include "model/byte_tokenizer.h"
#include "model/llama_params.h"
#include "model/tokenizer.h"
#include "train/trainer.h"

namespace bd {

namespace {

namespace fs = std::filesystem;

CommandSpec make_spec() {
  CommandSpec spec = {
      "train",
      "[--model DIR | --config FILE] --data FILE -o OUTDIR [--steps N] [--lr X] [--batch B] "
      "[--seq T] [--json]\n"
      "       bitdelta train ... --dp (--noise-multiplier SIGMA | --target-epsilon EPS) --delta D\n"
      "                      --max-grad-norm C [--sample-rate Q | --batch B] --user DID",
      "Trains on random windows of a text file with AdamW (warm-up, cosine decay, gradient-norm\n"
      "clipping) and F32 master weights. --model fine-tunes a Hugging Face folder (default: the\n"
      "embedded default model); --config trains that config.json from a seeded random init with\n"
      "the byte-level tokenizer. The tail of the data (--heldout-fraction), or --heldout FILE, is\n"
      "held out and evaluated. Writes OUTDIR (config.json, model.safetensors in F32,\n"
      "tokenizer.json) atomically; see docs/training.md.\n"
      "With --dp, DP-SGD: each step includes each disjoint window of --seq + 1 tokens with\n"
      "probability Q (--batch B: the expected batch, Q = B / windows), clips each window's\n"
      "gradient to C and adds N(0, SIGMA^2 C^2) noise. The run's epsilon is reserved in the\n"
      "user's privacy ledger before training (refused past --max-epsilon) and recorded in the\n"
      "model's privacy.* metadata; see docs/privacy.md.",
      {
          {"--model", "DIR", "model folder to fine-tune (default: the embedded default model)"},
          {"--config", "FILE", "config.json to train from scratch (random init, byte tokenizer)"},
          {"--data", "FILE", "training text"},
          {"-o", "OUTDIR", "output model folder (refused if it exists, unless --force)"},
          {"--steps", "N", "optimizer steps (default 200)"},
          {"--lr", "X", "peak learning rate (default 1e-3 with --config, 3e-4 otherwise)"},
          {"--batch", "B",
           "windows per step (default 8); with --dp, the expected windows per step"},
          {"--seq", "T", "tokens per window (default min(128, max_position_embeddings))"},
          {"--warmup", "N", "linear warm-up steps (default min(100, steps/10))"},
          {"--min-lr-ratio", "R", "cosine decay floor, as a fraction of --lr (default 0.1)"},
          {"--weight-decay", "W",
           "AdamW decoupled weight decay on matrices (default 0.1 with --config, 0 otherwise)"},
          {"--freeze-embeddings", "", "leave the token embedding (and a tied head) as they are"},
          {"--clip", "C", "max global gradient L2 norm, 0 disables (default 1.0)"},
          {"--seed", "S", "random init (S) and batch sampling (S + 1) (default 0)"},
          {"--heldout", "FILE", "held-out text (default: the tail of --data)"},
          {"--heldout-fraction", "F", "tail of --data held out when no --heldout (default 0.1)"},
          {"--eval-every", "N",
           "held-out evaluation every N steps, 0: only at the end "
           "(default steps/10)"},
          {"--eval-tokens", "N",
           "held-out tokens per periodic evaluation, 0: all (default 32768); "
           "the final evaluation uses all"},
          {"--threads", "N", "threads (default: all cores)"},
          {"--force", "", "replace OUTDIR if it exists"},
          {"--json", "", "print one JSON object at the end (no progress line)"},
      },
  };
  for (Option& option : private_training_options()) spec.options.push_back(std::move(option));
  return spec;
}

const CommandSpec kSpec = make_spec();

// Where training starts: parameters, the tokenizer and its tokenizer.json text.
struct Start {
  std::optional<LlamaParams> params;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string tokenizer_json;
  std::string source;       // "model DIR" or "config FILE"
  std::string fingerprint;  // of the model fine-tuned; empty from scratch
};

Start start_from_model(const std::string& dir) {
  Start start;
  Checkpoint checkpoint(dir);
  start.params.emplace(LlamaParams::from_checkpoint(checkpoint));
  start.tokenizer_json = read_file((fs::path(dir) / "tokenizer.json").string());
  start.tokenizer = parse_tokenizer_json(start.tokenizer_json, dir + "/tokenizer.json");
  start.source = "model " + dir;
  start.fingerprint = checkpoint.fingerprint();
  return start;
}

Start start_from_config(const std::string& path, uint64_t seed) {
  LlamaConfig config = parse_llama_config(read_file(path), path);
  if (config.vocab_size < kByteVocabSize)
    fail(path, ": vocab_size ", config.vocab_size, " is smaller than the byte tokenizer's ",
         kByteVocabSize);
  if (config.bos_token_id < 0) config.bos_token_id = kByteBosId;
  if (config.eos_token_id < 0) config.eos_token_id = kByteEosId;
  Start start;
  start.params.emplace(config);
  start.params->init_random(seed);
  start.tokenizer = make_byte_tokenizer();
  start.tokenizer_json = byte_tokenizer_json();
  start.source = "config " + path;
  return start;
}

// Option values, checked before anything is loaded or written.
TrainOptions read_options(const Args& args, bool from_scratch) {
  TrainOptions options;
  options.steps = args.get_int("--steps", 200);
  options.batch = args.get_int("--batch", 8);
  options.seq = args.get_int("--seq", 0);  // 0: the default, set once the config is known
  options.lr = args.get_double("--lr", from_scratch ? 1e-3 : 3e-4);
  options.warmup = args.get_int("--warmup", std::min<int64_t>(100, options.steps / 10));
  options.min_lr_ratio = args.get_double("--min-lr-ratio", 0.1);
  // No decay by default when fine-tuning: decoupled decay pulls every pretrained weight towards
  // zero, which a short fine-tune does not want (measured in models/default/MODEL_CARD.md).
  options.adamw.weight_decay = float(args.get_double("--weight-decay", from_scratch ? 0.1 : 0.0));
  options.freeze_embeddings = args.has("--freeze-embeddings");
  options.clip = args.get_double("--clip", 1.0);
  const int64_t seed = args.get_int("--seed", 0);
  if (seed < 0) throw UsageError(cat("--seed must be >= 0, got ", seed));
  options.seed = uint64_t(seed) + 1;
  options.eval_every = args.get_int("--eval-every", options.steps / 10);
  options.eval_tokens = args.get_int("--eval-tokens", 32768);
  options.quiet = args.has("--json");
  if (options.steps < 1) throw UsageError(cat("--steps must be at least 1, got ", options.steps));
  if (options.batch < 1) throw UsageError(cat("--batch must be at least 1, got ", options.batch));
  if (args.has("--seq") && options.seq < 1)
    throw UsageError(cat("--seq must be at least 1, got ", options.seq));
  if (!(options.lr > 0) || !std::isfinite(options.lr))
    throw UsageError(cat("--lr must be a positive number, got ", args.get("--lr")));
  if (options.warmup < 0 || options.warmup > options.steps)
    throw UsageError(cat("--warmup must lie in [0, --steps], got ", options.warmup));
  if (!(options.min_lr_ratio >= 0 && options.min_lr_ratio <= 1))
    throw UsageError(cat("--min-lr-ratio must lie in [0, 1], got ", options.min_lr_ratio));
  if (!(options.adamw.weight_decay >= 0 && options.adamw.weight_decay < 1 / options.lr))
    throw UsageError(cat("--weight-decay must lie in [0, 1/lr), got ", options.adamw.weight_decay));
  if (!(options.clip >= 0) || !std::isfinite(options.clip))
    throw UsageError(cat("--clip must be a number >= 0, got ", args.get("--clip")));
  if (options.eval_every < 0)
    throw UsageError(cat("--eval-every must be >= 0, got ", options.eval_every));
  if (options.eval_tokens < 0)
    throw UsageError(cat("--eval-tokens must be >= 0, got ", options.eval_tokens));
  return options;
}

// Encodes with the model's tokenizer and checks every id against the model's vocabulary.
EncodeFn encoder_for(const Tokenizer& tokenizer, int64_t vocab, const std::string& path) {
  return [&tokenizer, vocab, path](std::string_view text) {
    std::vector<int32_t> ids = tokenizer.encode(text, false);
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= vocab)
        fail(path, ": the tokenizer produced id ", ids[i], " at position ", i,
             ", outside the model's vocabulary of ", vocab);
    return ids;
  };
}

// The shortest text that reads back as the same value (0.1f is "0.1", not "0.100000001").
template <typename Number>
std::string format_number(Number value) {
  char text[32];
  return std::string(text, std::to_chars(text, text + sizeof text, value).ptr);
}

std::map<std::string, std::string> run_metadata(const Start& start, const TrainOptions& options,
                                                const Args& args, const TokenData& data,
                                                const TrainReport& report) {
  std::map<std::string, std::string> metadata = {
      {"bitdelta.version", BITDELTA_VERSION},
      {"train.source", start.source},
      {"train.steps", std::to_string(report.steps)},
      {"train.lr", format_number(options.lr)},
      {"train.warmup", std::to_string(options.warmup)},
      {"train.min_lr_ratio", format_number(options.min_lr_ratio)},
      {"train.weight_decay", format_number(options.adamw.weight_decay)},
      {"train.betas",
       format_number(options.adamw.beta1) + "," + format_number(options.adamw.beta2)},

      {"train.freeze_embeddings", options.freeze_embeddings ? "true" : "false"},
      {"train.batch", std::to_string(options.batch)},
      {"train.seq", std::to_string(options.seq)},
      {"train.seed", args.get("--seed", "0")},
      {"train.data", args.get("--data")},
      {"train.data_sha256", data.file_sha256},
      {"train.train_tokens", std::to_string(data.train.size())},
      {"train.final_loss", format_number(report.final_loss)},
      {"train.tokens_per_second", format_number(report.tokens_per_second)},
  };
  if (!options.dp) metadata["train.clip"] = format_number(options.clip);
  if (!start.fingerprint.empty()) metadata["train.source_fingerprint"] = start.fingerprint;
  if (report.heldout_tokens > 0) {
    metadata["train.heldout_nll"] = format_number(report.heldout_nll);
    metadata["train.heldout_tokens"] = std::to_string(report.heldout_tokens);
  }
  if (args.has("--heldout")) {
    metadata["train.heldout"] = args.get("--heldout");
    metadata["train.heldout_sha256"] = data.heldout_sha256;
  } else {
    metadata["train.heldout_fraction"] = format_number(args.get_double("--heldout-fraction", 0.1));
  }
  return metadata;
}

// Writes the model into a fresh sibling folder, then renames it into place, so OUTDIR is
// either complete or absent (with --force, the old OUTDIR is replaced only at the end).
void save_atomically(const std::string& out, const LlamaParams& params,
                     const std::string& tokenizer_json,
                     const std::map<std::string, std::string>& metadata, bool force) {
  fs::path target = fs::absolute(out).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/" names "out"
  const fs::path parent = target.parent_path();
  make_dirs(parent.string());
  const std::string suffix = ".tmp." + std::to_string(::getpid());
  const fs::path temp = parent / (target.filename().string() + suffix);
  const fs::path old = parent / (target.filename().string() + ".old." + std::to_string(::getpid()));
  std::error_code ignored;
  fs::remove_all(temp, ignored);
  try {
    LlamaConfig config = params.config();
    config.torch_dtype = "float32";
    save_checkpoint(temp.string(), config, params.named_tensors(), tokenizer_json, metadata, false);
    const bool replace = path_exists(target.string());
    if (replace && !force) fail(out, ": already exists (use --force to overwrite)");
    if (replace) fs::rename(target, old);
    fs::rename(temp, target);
    if (replace) fs::remove_all(old, ignored);
  } catch (const fs::filesystem_error& error) {
    fs::remove_all(temp, ignored);
    fail(out, ": cannot move the new model into place: ", error.code().message());
  } catch (...) {
    fs::remove_all(temp, ignored);
    throw;
  }
}

bool same_folder(const std::string& a, const std::string& b) {
  std::error_code error;
  return fs::equivalent(a, b, error);
}

void print_plan(const PrivatePlan& plan, int64_t physical_batch, int64_t ledger_run) {
  std::fprintf(stderr,
               "private run: %lld windows, sample rate %.6g (expected batch %.1f, up to %lld "
               "per pass), noise multiplier %.6g, clipping norm %g, %lld steps: epsilon %.4g at "
               "delta %g; reserved as run %lld of %s in %s\n",
               (long long)plan.windows, plan.dp.sample_rate,
               plan.dp.sample_rate * double(plan.windows), (long long)physical_batch,
               plan.dp.noise_multiplier, plan.dp.max_grad_norm, (long long)plan.steps, plan.epsilon,
               plan.delta, (long long)ledger_run, plan.user.c_str(), plan.ledger_path.c_str());
  if (plan.dp.seed)
    std::fprintf(stderr,
                 "warning: --dp-seed makes the noise reproducible: this run is NOT "
                 "private against anyone who knows the seed\n");
}

void print_summary(const TrainReport& report, const std::string& out) {
  std::printf("trained %lld steps in %s (%.0f tok/s): final loss %.4f", (long long)report.steps,
              format_duration(report.seconds).c_str(), report.tokens_per_second, report.final_loss);
  if (report.heldout_tokens > 0)
    std::printf(", held-out nll %.4f over %lld tokens", report.heldout_nll,
                (long long)report.heldout_tokens);
  std::printf("\nwrote %s\n", out.c_str());
}

}  // namespace

int run_train(int argc, char** argv) {
  Args args(kSpec, argc, argv);
  if (args.has("--model") && args.has("--config"))
    throw UsageError("give at most one of --model DIR or --config FILE");
  check_private_options(args);
  const double max_epsilon = args.get_double("--max-epsilon", 8);
  if (!(max_epsilon > 0)) throw UsageError(cat("--max-epsilon must be > 0, got ", max_epsilon));
  const std::string data_path = args.require("--data");
  const std::string out = args.require("-o");
  const bool from_scratch = args.has("--config");
  TrainOptions options = read_options(args, from_scratch);
  const double heldout_fraction =
      args.has("--heldout") ? 0.0 : args.get_double("--heldout-fraction", 0.1);
  if (!(heldout_fraction >= 0 && heldout_fraction < 1))
    throw UsageError(cat("--heldout-fraction must lie in [0, 1), got ", heldout_fraction));
  if (path_exists(out) && !args.has("--force"))
    fail(out, ": already exists (use --force to overwrite)");
  set_threads(int(args.get_int("--threads", 0)));

  const uint64_t init_seed = options.seed - 1;
  const std::string model_dir = from_scratch ? "" : model_dir_or_default(args);
  if (!from_scratch && same_folder(out, model_dir))
    fail(out, ": is the model being fine-tuned; choose another output folder");
  Start start = from_scratch ? start_from_config(args.get("--config"), init_seed)
                             : start_from_model(model_dir);
  const LlamaConfig& config = start.params->config();
  if (!args.has("--seq")) options.seq = std::min<int64_t>(128, config.max_position_embeddings);
  if (options.seq > config.max_position_embeddings)
    throw UsageError(cat("--seq ", options.seq, " exceeds the model's max_position_embeddings (",
                         config.max_position_embeddings, ")"));

  const int64_t vocab = config.vocab_size;
  TokenData data = load_token_data(data_path, encoder_for(*start.tokenizer, vocab, data_path),
                                   heldout_fraction, options.seq);
  if (args.has("--heldout")) {
    const std::string heldout_path = args.get("--heldout");
    load_heldout_file(heldout_path, encoder_for(*start.tokenizer, vocab, heldout_path), &data);
  }

  std::optional<PrivatePlan> plan;
  std::optional<LedgerReservation> reservation;
  if (args.has("--dp")) {
    plan = plan_private_run(args, int64_t(data.train.size()), options);
    reservation.emplace(*plan, max_epsilon, cat("bitdelta train -o ", out));
    if (!options.quiet) print_plan(*plan, options.batch, reservation->id());
  }
  Trainer trainer(*start.params, options);
  TrainReport report;
  try {
    report = train(trainer, data);
  } catch (...) {
    if (reservation) reservation->set_steps_taken(trainer.steps_done());
    throw;
  }
  std::map<std::string, std::string> metadata = run_metadata(start, options, args, data, report);
  if (plan) {
    reservation->set_steps_taken(report.steps);
    metadata.merge(privacy_metadata(*plan, options.seq, reservation->id()));
  }
  save_atomically(out, *start.params, start.tokenizer_json, metadata, args.has("--force"));
  if (reservation) reservation->finish();

  if (!options.quiet) {
    print_summary(report, out);
    if (plan)
      std::printf(
          "privacy: epsilon %.4g at delta %g spent by %s (%.1f%% of per-window gradients "
          "clipped)\n",
          plan->epsilon, plan->delta, plan->user.c_str(),
          100.0 * double(report.clipped) /
              std::max(1.0, double(report.trained_tokens) / double(options.seq)));
    return 0;
  }
  nlohmann::json privacy = nullptr;
  if (plan)
    privacy = {{"epsilon", plan->epsilon},
               {"delta", plan->delta},
               {"rdp_order", plan->order},
               {"noise_multiplier", plan->dp.noise_multiplier},
               {"sample_rate", plan->dp.sample_rate},
               {"max_grad_norm", plan->dp.max_grad_norm},
               {"windows", plan->windows},
               {"physical_batch", options.batch},
               {"clipped", report.clipped},
               {"user", plan->user},
               {"ledger", plan->ledger_path},
               {"ledger_run", reservation->id()},
               {"secret_randomness", !plan->dp.seed.has_value()}};
  nlohmann::json evals = nlohmann::json::array();
  for (const HeldoutEval& eval : report.evals)
    evals.push_back({{"step", eval.step}, {"heldout_nll", eval.nll}, {"tokens", eval.tokens}});
  print_json({{"steps", report.steps},
              {"final_loss", report.final_loss},
              {"heldout_nll", report.heldout_tokens > 0 ? nlohmann::json(report.heldout_nll)
                                                        : nlohmann::json(nullptr)},
              {"heldout_tokens", report.heldout_tokens},
              {"tokens_per_second", report.tokens_per_second},
              {"seconds", report.seconds},
              {"output", out},
              {"train_tokens", data.train.size()},
              {"trained_tokens", report.trained_tokens},
              {"parameters", start.params->size()},
              {"lr", options.lr},
              {"batch", options.batch},
              {"seq", options.seq},
              {"data_sha256", data.file_sha256},
              {"evals", evals},
              {"privacy", privacy}});
  return 0;
}

}  // namespace bd
