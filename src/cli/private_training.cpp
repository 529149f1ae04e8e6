#include "cli/private_training.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "privacy/ledger.h"
#include "privacy/rdp.h"
#include "train/data.h"
#include "trust/did.h"

namespace bd {

namespace {

// The options that only make sense with --dp.
const char* const kPrivateOnly[] = {
    "--noise-multiplier", "--target-epsilon", "--delta",  "--max-grad-norm", "--sample-rate",
    "--physical-batch",   "--user",           "--ledger", "--max-epsilon",   "--dp-seed"};

// Windows per forward pass when not given: the expected batch, at most this many (the
// activations and the recorded output gradients grow with it).
constexpr int64_t kMaxDefaultPhysicalBatch = 32;

std::string shortest(double value) {
  char text[32];
  return std::string(text, std::to_chars(text, text + sizeof text, value).ptr);
}

double positive_option(const Args& args, const char* name) {
  const double value = args.get_double(name, 0);
  if (!(value > 0) || !std::isfinite(value))
    throw UsageError(cat(name, " must be a positive number, got ", args.get(name)));
  return value;
}

}  // namespace

std::vector<Option> private_training_options() {
  return {
      {"--dp", "",
       "DP-SGD: Poisson sampling, per-example clipping, Gaussian noise (docs/privacy.md)"},
      {"--noise-multiplier", "SIGMA", "--dp: noise standard deviation over the clipping norm"},
      {"--target-epsilon", "EPS",
       "--dp: the smallest noise multiplier whose epsilon after --steps stays <= EPS"},
      {"--delta", "DELTA", "--dp: the delta of the (epsilon, delta) guarantee (required)"},
      {"--max-grad-norm", "C", "--dp: per-example gradient clipping norm (required)"},
      {"--sample-rate", "Q",
       "--dp: probability that a step includes each window (default: --batch / windows)"},
      {"--physical-batch", "P",
       "--dp: windows per forward pass (default: the expected batch, at most 32)"},
      {"--user", "DID", "--dp: whose privacy budget the run spends (did:lux, required)"},
      {"--ledger", "FILE", "--dp: the privacy budget ledger (default: see docs/privacy.md)"},
      {"--max-epsilon", "EPS",
       "--dp: refuse the run if the user's total epsilon would exceed EPS (default 8)"},
      {"--dp-seed", "S",
       "--dp: reproducible sampling and noise, for tests only: NOT private against anyone "
       "who knows S (default: secret randomness from the OS)"},
  };
}

void check_private_options(const Args& args) {
  if (!args.has("--dp")) {
    for (const char* option : kPrivateOnly)
      if (args.has(option)) throw UsageError(cat(option, " applies only with --dp"));
    return;
  }
  if (args.has("--clip"))
    throw UsageError("--clip clips the whole batch's gradient; with --dp use --max-grad-norm");
  if (args.has("--noise-multiplier") == args.has("--target-epsilon"))
    throw UsageError("--dp needs exactly one of --noise-multiplier SIGMA or --target-epsilon EPS");
  if (args.has("--sample-rate") && args.has("--batch"))
    throw UsageError("give at most one of --sample-rate Q or --batch B (the expected batch)");
  for (const char* option : {"--delta", "--max-grad-norm", "--user"})
    if (!args.has(option)) throw UsageError(cat("--dp needs ", option));
}

PrivatePlan plan_private_run(const Args& args, int64_t train_tokens, TrainOptions& options) {
  PrivatePlan plan;
  plan.delta = args.get_double("--delta", 0);
  if (!(plan.delta > 0 && plan.delta < 1))
    throw UsageError(cat("--delta must lie in (0, 1), got ", args.get("--delta")));
  plan.dp.max_grad_norm = positive_option(args, "--max-grad-norm");
  try {
    plan.user = parse_lux_did(args.get("--user")).str();
  } catch (const Error& error) {
    throw UsageError(cat("--user: ", error.what()));
  }
  plan.windows = disjoint_window_count(train_tokens, options.seq);
  plan.steps = options.steps;
  if (args.has("--sample-rate")) {
    plan.dp.sample_rate = args.get_double("--sample-rate", 0);
    if (!(plan.dp.sample_rate > 0 && plan.dp.sample_rate <= 1))
      throw UsageError(cat("--sample-rate must lie in (0, 1], got ", args.get("--sample-rate")));
  } else {
    if (options.batch > plan.windows)
      throw UsageError(cat("--batch ", options.batch, " (the expected batch) exceeds the ",
                           plan.windows, " windows of ", options.seq + 1,
                           " tokens in the training text"));
    plan.dp.sample_rate = double(options.batch) / double(plan.windows);
  }
  const int64_t expected_batch =
      std::max<int64_t>(1, int64_t(std::ceil(plan.dp.sample_rate * double(plan.windows))));
  options.batch = args.has("--physical-batch") ? args.get_int("--physical-batch", 0)
                                               : std::min(expected_batch, kMaxDefaultPhysicalBatch);
  if (options.batch < 1)
    throw UsageError(cat("--physical-batch must be at least 1, got ", options.batch));

  const std::vector<double> orders = opacus_orders();
  if (args.has("--target-epsilon")) {
    const double target = positive_option(args, "--target-epsilon");
    plan.dp.noise_multiplier =
        noise_for_epsilon(target, plan.delta, plan.dp.sample_rate, plan.steps, orders)
            .noise_multiplier;
  } else {
    plan.dp.noise_multiplier = args.get_double("--noise-multiplier", -1);
    if (!(plan.dp.noise_multiplier >= 0) || !std::isfinite(plan.dp.noise_multiplier))
      throw UsageError(
          cat("--noise-multiplier must be a number >= 0, got ", args.get("--noise-multiplier")));
  }
  const PrivateRun run{plan.dp.sample_rate, plan.dp.noise_multiplier, plan.steps};
  const std::vector<double> curve = rdp_curve({&run, 1}, orders);
  const PrivacySpent spent = epsilon_from_rdp(orders, curve, plan.delta);
  plan.epsilon = spent.epsilon;
  plan.order = spent.order;
  if (args.has("--dp-seed")) {
    const int64_t seed = args.get_int("--dp-seed", 0);
    if (seed < 0) throw UsageError(cat("--dp-seed must be >= 0, got ", seed));
    plan.dp.seed = uint64_t(seed);
  }
  plan.ledger_path = args.has("--ledger") ? args.get("--ledger") : default_ledger_path();
  options.dp = plan.dp;
  return plan;
}

LedgerReservation::LedgerReservation(const PrivatePlan& plan, double max_epsilon,
                                     const std::string& note)
    : ledger_(std::make_unique<PrivacyLedger>(plan.ledger_path)) {
  const PrivateRun run{plan.dp.sample_rate, plan.dp.noise_multiplier, plan.steps};
  id_ = ledger_->reserve(plan.user, run, plan.delta, max_epsilon, note);
}

void LedgerReservation::finish() {
  ledger_->complete(id_, steps_taken_);
  finished_ = true;
}

LedgerReservation::~LedgerReservation() {
  if (finished_) return;
  // A run that stopped early spent what its steps spent (their noisy updates happened); one
  // that took no step spent nothing. If this update fails the row stays planned, which counts
  // in full: the ledger can only overstate what was spent.
  try {
    if (steps_taken_ > 0)
      ledger_->complete(id_, steps_taken_);
    else
      ledger_->abort(id_);
  } catch (const Error& error) {
    std::fprintf(stderr, "bitdelta: warning: the ledger keeps run %lld as planned: %s\n",
                 (long long)id_, error.what());
  }
}

std::map<std::string, std::string> privacy_metadata(const PrivatePlan& plan, int64_t seq,
                                                    int64_t ledger_run) {
  return {
      {"privacy.mechanism", "dp-sgd"},
      {"privacy.epsilon", shortest(plan.epsilon)},
      {"privacy.delta", shortest(plan.delta)},
      {"privacy.rdp_order", shortest(plan.order)},
      {"privacy.accountant",
       "rdp, poisson-subsampled gaussian (Mironov, Talwar, Zhang 2019), opacus orders, improved "
       "conversion (Balle et al. 2020)"},
      {"privacy.noise_multiplier", shortest(plan.dp.noise_multiplier)},
      {"privacy.sample_rate", shortest(plan.dp.sample_rate)},
      {"privacy.steps", std::to_string(plan.steps)},
      {"privacy.max_grad_norm", shortest(plan.dp.max_grad_norm)},
      {"privacy.unit", cat("one window of ", seq + 1, " tokens (", plan.windows, " windows)")},
      {"privacy.examples", std::to_string(plan.windows)},
      {"privacy.randomness", plan.dp.seed ? cat("seeded (--dp-seed ", *plan.dp.seed,
                                                "): not private against anyone who knows it")
                                          : "secret (ChaCha20 keyed from the OS)"},
      {"privacy.user", plan.user},
      {"privacy.ledger_run", std::to_string(ledger_run)},
  };
}

}  // namespace bd
