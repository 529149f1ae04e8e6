// The privacy budget ledger: every private training run of every user (a DID), in one SQLite
// file, so that a user's total privacy loss is the composition of all their runs and a run that
// would take it past a cap is refused before it starts.
//
// A run is reserved (state 'planned', with the steps it plans) in one transaction before any
// training, and marked 'completed' (with the steps it actually took) or 'aborted' after. Planned
// runs count in full: a run that crashes stays counted at its planned size, never lost and never
// counted twice (it is one row). The total is recomputed from the rows (the RDP curve is a sum
// over runs), so no stored aggregate can drift from them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "privacy/rdp.h"

struct sqlite3;

namespace bd {

struct LedgerRun {
  int64_t id = 0;
  std::string user;  // the owner's DID
  PrivateRun run;    // steps: planned, or taken once completed
  double delta = 0;
  std::string state;              // planned | completed | aborted
  std::string started, finished;  // UTC, ISO 8601 ("" while planned)
  std::string note;
};

struct UserBudget {
  std::string user;
  int64_t runs = 0;    // planned and completed (aborted runs spent nothing)
  double epsilon = 0;  // at the ledger's δ, over the default (Opacus) orders
  double order = 0;
};

class PrivacyLedger {
 public:
  // Opens (creating if needed) the ledger file. Throws bd::Error if it is not a ledger.
  explicit PrivacyLedger(const std::string& path);
  ~PrivacyLedger();
  PrivacyLedger(const PrivacyLedger&) = delete;
  PrivacyLedger& operator=(const PrivacyLedger&) = delete;

  // Reserves `run` for `user` if the user's ε at `delta` with it stays ≤ max_epsilon; else throws
  // bd::Error saying what the user has spent and what the run would cost. Atomic against other
  // processes using the same file (an immediate write transaction). Returns the run's id.
  int64_t reserve(const std::string& user, const PrivateRun& run, double delta, double max_epsilon,
                  const std::string& note = "");
  // Marks a planned run completed with the steps it took (≤ the planned steps), or aborted.
  void complete(int64_t id, int64_t steps_taken);
  void abort(int64_t id);

  std::vector<LedgerRun> runs(const std::string& user = "") const;  // all users when empty
  // Spent budget per user (or one user) at `delta`, sorted by DID.
  std::vector<UserBudget> budgets(double delta, const std::string& user = "") const;

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

// The default ledger file: $BITDELTA_LEDGER, else $XDG_DATA_HOME/bitdelta/privacy-ledger.sqlite,
// else ~/.local/share/bitdelta/privacy-ledger.sqlite.
std::string default_ledger_path();

}  // namespace bd
