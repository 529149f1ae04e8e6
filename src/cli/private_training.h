// The DP-SGD side of `bitdelta train --dp`: its options, the privacy the run is planned to
// spend (the RDP accountant), its reservation in the user's budget ledger before any training,
// and the privacy.* metadata the fine-tune records (and `compress` carries into the adapter).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/args.h"
#include "train/trainer.h"

namespace bd {

class PrivacyLedger;

// The options `train` declares for DP-SGD.
std::vector<Option> private_training_options();

// Refuses DP options without --dp, and --dp without its required options (UsageError).
void check_private_options(const Args& args);

struct PrivatePlan {
  DpOptions dp;
  double delta = 0;
  std::string user;     // the budget owner's DID, canonical (EIP-55)
  int64_t windows = 0;  // N: disjoint windows of the training text (the examples)
  int64_t steps = 0;
  double epsilon = 0;  // planned ε at delta (Opacus orders, improved conversion)
  double order = 0;    // the RDP order that gives it
  std::string ledger_path;
};

// Works out (q, σ) from the options and the training stream, and ε for options.steps steps;
// sets options.dp and options.batch (windows per forward pass). Throws UsageError for options
// that do not fit (e.g. an expected batch above N).
PrivatePlan plan_private_run(const Args& args, int64_t train_tokens, TrainOptions& options);

// The plan's run held in the ledger: reserved on construction (refused, with nothing written,
// when it would take the user past --max-epsilon), then completed with the steps taken or
// aborted when none were.
class LedgerReservation {
 public:
  LedgerReservation(const PrivatePlan& plan, double max_epsilon, const std::string& note);
  ~LedgerReservation();  // unfinished: completed with the steps taken so far, or aborted
  LedgerReservation(const LedgerReservation&) = delete;
  LedgerReservation& operator=(const LedgerReservation&) = delete;

  int64_t id() const { return id_; }
  void set_steps_taken(int64_t steps) { steps_taken_ = steps; }
  void finish();  // completed with the steps taken

 private:
  std::unique_ptr<PrivacyLedger> ledger_;
  int64_t id_ = 0;
  int64_t steps_taken_ = 0;
  bool finished_ = false;
};

// The fine-tune's privacy.* metadata (strings), which `compress` copies into the adapter. Only
// what the guarantee covers: the parameters and the accountant's ε, never statistics of the
// private data (losses, clipped fractions), which are not private.
std::map<std::string, std::string> privacy_metadata(const PrivatePlan& plan, int64_t seq,
                                                    int64_t ledger_run);

}  // namespace bd
