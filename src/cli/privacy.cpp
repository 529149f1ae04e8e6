// bitdelta privacy epsilon|noise|ledger: the RDP accountant (privacy/rdp.h) and the budget
// ledger (privacy/ledger.h) on the command line.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "core/error.h"
#include "privacy/ledger.h"
#include "privacy/rdp.h"
#include "trust/did.h"

namespace bd {

namespace {

const Option kOrdersOption = {
    "--orders", "opacus|tf|LIST",
    "RDP orders: opacus (default: 1.1, 1.2, ..., 10.9, 12, ..., 63), tf (TF Privacy's\n"
    "                        compute_dp_sgd_privacy: 1.25, ..., 63, 128, 256, 512) or a comma "
    "list"};
const Option kConversionOption = {
    "--conversion", "improved|classic",
    "RDP to (epsilon, delta): improved (Balle et al. 2020, as Opacus and TF Privacy; default)\n"
    "                        or classic (Mironov 2017)"};

const Option kSampleRateOption = {"--sample-rate", "Q",
                                  "probability that a step includes each example, in [0, 1]"};
const Option kStepsOption = {"--steps", "T", "number of steps"};
const Option kDeltaOption = {"--delta", "DELTA", "target delta, in (0, 1)"};

const CommandSpec kEpsilonSpec = {
    "privacy epsilon",
    "(--sample-rate Q --noise-multiplier SIGMA --steps T | --run Q,SIGMA,T ...) --delta DELTA\n"
    "                [--orders opacus|tf|LIST] [--conversion improved|classic] [--json]",
    "The epsilon at DELTA of DP-SGD runs (Poisson sampling at rate Q, Gaussian noise of\n"
    "SIGMA times the clipping norm, T steps), from their composed Renyi-DP curve. Several\n"
    "--run compose runs with different settings (e.g. all of one user's fine-tunes).",
    {kSampleRateOption,
     {"--noise-multiplier", "SIGMA", "noise standard deviation over the clipping norm, >= 0"},
     kStepsOption,
     {"--run", "Q,SIGMA,T", "one run (repeatable; instead of the three options above)", true},
     kDeltaOption,
     kOrdersOption,
     kConversionOption,
     {"--json", "", "print {\"epsilon\": ..., \"order\": ...}"}},
};

const CommandSpec kNoiseSpec = {
    "privacy noise",
    "--target-epsilon EPS --delta DELTA --sample-rate Q (--steps T | --epochs E)\n"
    "                [--orders opacus|tf|LIST] [--conversion improved|classic] [--json]",
    "The noise multiplier that keeps a DP-SGD run within (EPS, DELTA): Opacus's\n"
    "get_noise_multiplier search (double sigma until epsilon <= EPS, then bisect until epsilon is\n"
    "within 0.01 below EPS), so the epsilon reached never exceeds the target. --epochs E means\n"
    "int(E / Q) steps.",
    {{"--target-epsilon", "EPS", "the epsilon not to exceed, > 0"},
     kDeltaOption,
     kSampleRateOption,
     kStepsOption,
     {"--epochs", "E", "passes over the data (steps = int(E / Q))"},
     kOrdersOption,
     kConversionOption,
     {"--json", "", "print {\"noise_multiplier\": ..., \"epsilon\": ...}"}},
};

const CommandSpec kLedgerSpec = {
    "privacy ledger",
    "[--ledger FILE] [--user DID] [--delta DELTA] [--max-epsilon EPS] [--runs] [--json]",
    "Each user's privacy spent over all their private runs (the composition of the runs'\n"
    "Renyi-DP curves; planned runs count in full until they complete) and what remains of the\n"
    "cap. The ledger file: --ledger, else $BITDELTA_LEDGER, else\n"
    "$XDG_DATA_HOME/bitdelta/privacy-ledger.sqlite (~/.local/share/... without XDG_DATA_HOME).",
    {{"--ledger", "FILE", "the ledger (SQLite)"},
     {"--user", "DID", "only this user"},
     {"--delta", "DELTA", "delta at which epsilon is reported (default 1e-5)"},
     {"--max-epsilon", "EPS",
      "the per-user cap the remaining budget is measured against (default 8)"},
     {"--runs", "", "also list every run"},
     {"--json", "", "print one JSON object"}},
};

std::vector<double> parse_orders(const std::string& text) {
  if (text.empty() || text == "opacus") return opacus_orders();
  if (text == "tf") return tf_orders();
  std::vector<double> orders;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    char* end = nullptr;
    const double order = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0')
      throw UsageError(cat("--orders: '", item, "' is not a number (opacus, tf or a comma list)"));
    orders.push_back(order);
  }
  return orders;
}

RdpConversion parse_conversion(const std::string& text) {
  if (text.empty() || text == "improved") return RdpConversion::kImproved;
  if (text == "classic") return RdpConversion::kClassic;
  throw UsageError(cat("--conversion must be improved or classic, got '", text, "'"));
}

int64_t parse_steps(const std::string& option, const std::string& text) {
  char* end = nullptr;
  const long long steps = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || steps < 0)
    throw UsageError(cat(option, " expects a step count >= 0, got '", text, "'"));
  return steps;
}

PrivateRun parse_run(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) parts.push_back(item);
  if (parts.size() != 3) throw UsageError(cat("--run expects Q,SIGMA,T, got '", text, "'"));
  auto number = [&](const std::string& part) {
    char* end = nullptr;
    const double value = std::strtod(part.c_str(), &end);
    if (part.empty() || *end != '\0') throw UsageError(cat("--run: '", part, "' is not a number"));
    return value;
  };
  return {number(parts[0]), number(parts[1]), parse_steps("--run", parts[2])};
}

// JSON has no infinity: an infinite epsilon is printed as null with "infinite": true.
void print_epsilon(double epsilon, double order, bool json) {
  if (json) {
    nlohmann::json out = {{"epsilon", nullptr}, {"order", nullptr}};
    if (std::isinf(epsilon)) {
      out["infinite"] = true;
    } else {
      out["epsilon"] = epsilon;
      if (order > 0) out["order"] = order;
    }
    print_json(out);
  } else if (std::isinf(epsilon)) {
    std::printf("epsilon inf (no noise: no privacy)\n");
  } else if (order > 0) {
    std::printf("epsilon %.10g (order %g)\n", epsilon, order);
  } else {
    std::printf("epsilon %.10g\n", epsilon);
  }
}

int run_epsilon(int argc, char** argv) {
  const Args args(kEpsilonSpec, argc, argv);
  std::vector<PrivateRun> runs;
  for (const std::string& run : args.get_all("--run")) runs.push_back(parse_run(run));
  const bool single =
      args.has("--sample-rate") || args.has("--noise-multiplier") || args.has("--steps");
  if (single && !runs.empty())
    throw UsageError("give either --sample-rate/--noise-multiplier/--steps or --run, not both");
  if (!single && runs.empty())
    throw UsageError("give --sample-rate, --noise-multiplier and --steps, or one --run per run");
  if (single)
    runs.push_back({args.get_double("--sample-rate", NAN),
                    args.get_double("--noise-multiplier", NAN),
                    parse_steps("--steps", args.require("--steps"))});
  for (const PrivateRun& run : runs)
    if (std::isnan(run.sample_rate) || std::isnan(run.noise_multiplier))
      throw UsageError("--sample-rate and --noise-multiplier are required with --steps");
  const std::vector<double> orders = parse_orders(args.get("--orders"));
  const double delta = args.get_double("--delta", NAN);
  if (!args.has("--delta")) throw UsageError("--delta is required");
  const PrivacySpent spent = epsilon_from_rdp(orders, rdp_curve(runs, orders), delta,
                                              parse_conversion(args.get("--conversion")));
  print_epsilon(spent.epsilon, spent.order, args.has("--json"));
  return 0;
}

int run_noise(int argc, char** argv) {
  const Args args(kNoiseSpec, argc, argv);
  if (!args.has("--target-epsilon")) throw UsageError("--target-epsilon is required");
  const double target = args.get_double("--target-epsilon", NAN);
  const double delta = args.get_double("--delta", NAN);
  if (!args.has("--delta")) throw UsageError("--delta is required");
  const double q = args.get_double("--sample-rate", NAN);
  if (!args.has("--sample-rate")) throw UsageError("--sample-rate is required");
  if (args.has("--steps") == args.has("--epochs"))
    throw UsageError("give exactly one of --steps and --epochs");
  int64_t steps = 0;
  if (args.has("--steps")) {
    steps = parse_steps("--steps", args.get("--steps"));
  } else {
    const double epochs = args.get_double("--epochs", NAN);
    if (!(epochs > 0) || !(q > 0))
      throw UsageError("--epochs needs epochs > 0 and a sample rate > 0");
    steps = int64_t(epochs / q);
  }
  const std::vector<double> orders = parse_orders(args.get("--orders"));
  const NoiseForTarget found = noise_for_epsilon(target, delta, q, steps, orders,
                                                 parse_conversion(args.get("--conversion")));
  if (args.has("--json")) {
    print_json({{"noise_multiplier", found.noise_multiplier},
                {"epsilon", found.epsilon},
                {"steps", steps}});
  } else {
    std::printf("noise multiplier %.10g (epsilon %.10g after %lld steps)\n", found.noise_multiplier,
                found.epsilon, static_cast<long long>(steps));
  }
  return 0;
}

int run_ledger(int argc, char** argv) {
  const Args args(kLedgerSpec, argc, argv);
  const double delta = args.get_double("--delta", 1e-5);
  const double cap = args.get_double("--max-epsilon", 8);
  if (!(cap > 0)) throw UsageError("--max-epsilon must be > 0");
  const std::string path = args.has("--ledger") ? args.get("--ledger") : default_ledger_path();
  if (!std::filesystem::exists(path)) fail("no privacy ledger at ", path, " (no private run yet)");
  const PrivacyLedger ledger(path);
  const std::string user = args.has("--user") ? parse_lux_did(args.get("--user")).str() : "";
  const std::vector<UserBudget> budgets = ledger.budgets(delta, user);
  if (!user.empty() && budgets.empty()) fail("no private runs of ", user, " in ", path);
  const std::vector<LedgerRun> runs =
      args.has("--runs") ? ledger.runs(user) : std::vector<LedgerRun>{};
  if (args.has("--json")) {
    nlohmann::json out = {{"ledger", path}, {"delta", delta}, {"max_epsilon", cap}};
    out["users"] = nlohmann::json::array();
    for (const UserBudget& b : budgets)
      out["users"].push_back({{"user", b.user},
                              {"runs", b.runs},
                              {"epsilon", b.epsilon},
                              {"remaining", std::max(0.0, cap - b.epsilon)}});
    if (args.has("--runs")) {
      out["runs"] = nlohmann::json::array();
      for (const LedgerRun& r : runs)
        out["runs"].push_back({{"id", r.id},
                               {"user", r.user},
                               {"sample_rate", r.run.sample_rate},
                               {"noise_multiplier", r.run.noise_multiplier},
                               {"steps", r.run.steps},
                               {"delta", r.delta},
                               {"state", r.state},
                               {"started", r.started},
                               {"finished", r.finished},
                               {"note", r.note}});
    }
    print_json(out);
    return 0;
  }
  std::printf("ledger %s: epsilon at delta %g, cap %g\n", path.c_str(), delta, cap);
  for (const UserBudget& b : budgets)
    std::printf("  %s: %lld runs, epsilon %.6g spent, %.6g remaining\n", b.user.c_str(),
                static_cast<long long>(b.runs), b.epsilon, std::max(0.0, cap - b.epsilon));
  for (const LedgerRun& r : runs)
    std::printf("  run %lld %s: q %g, sigma %g, %lld steps, %s %s %s\n",
                static_cast<long long>(r.id), r.user.c_str(), r.run.sample_rate,
                r.run.noise_multiplier, static_cast<long long>(r.run.steps), r.state.c_str(),
                r.started.c_str(), r.finished.c_str());
  return 0;
}

}  // namespace

int run_privacy(int argc, char** argv) {
  return run_subcommand(
      "privacy",
      {{"epsilon", run_epsilon, "epsilon of DP-SGD runs from their composed Renyi-DP curve"},
       {"noise", run_noise, "the noise multiplier that keeps a run within a target epsilon"},
       {"ledger", run_ledger,
        "each user's privacy spent over all their private runs, and what remains"}},
      argc, argv);
}

}  // namespace bd
