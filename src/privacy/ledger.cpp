#include "privacy/ledger.h"

#include <sqlite3.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "core/utc_time.h"

namespace bd {

namespace {

constexpr const char* kFormat = "bitdelta-privacy-ledger-1";

// One prepared statement, finalized on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &statement_, nullptr) != SQLITE_OK)
      fail("privacy ledger: ", sqlite3_errmsg(db));
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, const std::string& text) {
    check(sqlite3_bind_text(statement_, index, text.c_str(), int(text.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int index, double value) {
    check(sqlite3_bind_double(statement_, index, value));
    return *this;
  }
  Statement& bind(int index, int64_t value) {
    check(sqlite3_bind_int64(statement_, index, value));
    return *this;
  }
  // True while a row is ready; false when done.
  bool step() {
    const int rc = sqlite3_step(statement_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail("privacy ledger: ", sqlite3_errmsg(db_));
  }
  std::string text(int column) const {
    const auto* value = sqlite3_column_text(statement_, column);
    return value ? reinterpret_cast<const char*>(value) : "";
  }
  double real(int column) const { return sqlite3_column_double(statement_, column); }
  int64_t integer(int column) const { return sqlite3_column_int64(statement_, column); }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail("privacy ledger: ", sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* statement_ = nullptr;
};

void exec(sqlite3* db, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string text = message ? message : sqlite3_errmsg(db);
    sqlite3_free(message);
    fail("privacy ledger: ", text);
  }
}

// Rolls back unless committed (an exception between BEGIN and COMMIT leaves nothing behind).
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) { exec(db, "BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (!committed_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec(db_, "COMMIT");
    committed_ = true;
  }

 private:
  sqlite3* db_;
  bool committed_ = false;
};

constexpr const char* kSelectRuns =
    "SELECT id, user, sample_rate, noise_multiplier, steps, delta, state, started, finished, note "
    "FROM runs";

LedgerRun read_run(const Statement& s) {
  return {s.integer(0), s.text(1), PrivateRun{s.real(2), s.real(3), s.integer(4)},
          s.real(5),    s.text(6), s.text(7),
          s.text(8),    s.text(9)};
}

std::vector<LedgerRun> select_runs(sqlite3* db, const std::string& user) {
  Statement s(db, user.empty()
                      ? (std::string(kSelectRuns) + " ORDER BY id").c_str()
                      : (std::string(kSelectRuns) + " WHERE user = ?1 ORDER BY id").c_str());
  if (!user.empty()) s.bind(1, user);
  std::vector<LedgerRun> runs;
  while (s.step()) runs.push_back(read_run(s));
  return runs;
}

// ε at δ of the runs that count (planned and completed).
PrivacySpent spent_by(const std::vector<LedgerRun>& runs, double delta) {
  std::vector<PrivateRun> counted;
  for (const LedgerRun& r : runs)
    if (r.state != "aborted") counted.push_back(r.run);
  const std::vector<double> orders = opacus_orders();
  return epsilon_from_rdp(orders, rdp_curve(counted, orders), delta);
}

}  // namespace

std::string default_ledger_path() {
  if (const char* path = std::getenv("BITDELTA_LEDGER"); path && *path) return path;
  if (const char* data = std::getenv("XDG_DATA_HOME"); data && *data)
    return std::string(data) + "/bitdelta/privacy-ledger.sqlite";
  const char* home = std::getenv("HOME");
  if (!home || !*home) fail("privacy ledger: no HOME; pass --ledger FILE");
  return std::string(home) + "/.local/share/bitdelta/privacy-ledger.sqlite";
}

PrivacyLedger::PrivacyLedger(const std::string& path) : path_(path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ignored;
  if (!parent.empty()) std::filesystem::create_directories(parent, ignored);
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    const std::string message = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    fail("privacy ledger ", path, ": ", message);
  }
  sqlite3_busy_timeout(db_, 30000);  // another process's write transaction: wait, then fail
  try {
    Transaction t(db_);
    exec(
        db_,
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS runs("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " user TEXT NOT NULL CHECK(length(user) > 0),"
        " sample_rate REAL NOT NULL CHECK(sample_rate >= 0 AND sample_rate <= 1),"
        " noise_multiplier REAL NOT NULL CHECK(noise_multiplier >= 0),"
        " steps INTEGER NOT NULL CHECK(steps >= 0),"
        " delta REAL NOT NULL CHECK(delta > 0 AND delta < 1),"
        " state TEXT NOT NULL CHECK(state IN ('planned', 'completed', 'aborted')),"
        " started TEXT NOT NULL, finished TEXT NOT NULL DEFAULT '', note TEXT NOT NULL DEFAULT '');"
        "CREATE INDEX IF NOT EXISTS runs_user ON runs(user);");
    Statement format(db_, "SELECT value FROM meta WHERE key = 'format'");
    if (!format.step()) {
      Statement insert(db_, "INSERT INTO meta(key, value) VALUES ('format', ?1)");
      insert.bind(1, std::string(kFormat)).step();
    } else if (format.text(0) != kFormat) {
      fail("unknown format '", format.text(0), "'");
    }
    t.commit();
  } catch (const Error& e) {
    sqlite3_close(db_);
    db_ = nullptr;
    fail(path, " is not a bitdelta privacy ledger (", e.what(), ")");
  }
}

PrivacyLedger::~PrivacyLedger() {
  sqlite3_close(db_);
}

int64_t PrivacyLedger::reserve(const std::string& user, const PrivateRun& run, double delta,
                               double max_epsilon, const std::string& note) {
  if (user.empty()) fail("privacy ledger: a run needs the user's DID");
  if (!(max_epsilon > 0)) fail("privacy ledger: the epsilon cap must be > 0, got ", max_epsilon);
  const std::vector<double> orders = opacus_orders();
  rdp_curve({&run, 1}, orders);  // validates q, σ and steps before anything is written
  Transaction t(db_);
  std::vector<LedgerRun> runs = select_runs(db_, user);
  const PrivacySpent before = spent_by(runs, delta);
  runs.push_back({0, user, run, delta, "planned", "", "", ""});
  const PrivacySpent after = spent_by(runs, delta);
  if (after.epsilon > max_epsilon)
    fail("privacy budget exceeded for ", user, ": spent epsilon ", before.epsilon, " at delta ",
         delta, ", this run (q ", run.sample_rate, ", sigma ", run.noise_multiplier, ", ",
         run.steps, " steps) would bring it to ", after.epsilon, ", above the cap of ",
         max_epsilon);
  Statement insert(db_,
                   "INSERT INTO runs(user, sample_rate, noise_multiplier, steps, delta, state, "
                   "started, note) VALUES (?1, ?2, ?3, ?4, ?5, 'planned', ?6, ?7)");
  insert.bind(1, user)
      .bind(2, run.sample_rate)
      .bind(3, run.noise_multiplier)
      .bind(4, run.steps)
      .bind(5, delta)
      .bind(6, utc_now())
      .bind(7, note)
      .step();
  const int64_t id = sqlite3_last_insert_rowid(db_);
  t.commit();
  return id;
}

void PrivacyLedger::complete(int64_t id, int64_t steps_taken) {
  Transaction t(db_);
  Statement planned(db_, "SELECT steps FROM runs WHERE id = ?1 AND state = 'planned'");
  planned.bind(1, id);
  if (!planned.step()) fail("privacy ledger: no planned run ", id);
  if (steps_taken < 0 || steps_taken > planned.integer(0))
    fail("privacy ledger: run ", id, " planned ", planned.integer(0),
         " steps, cannot complete with ", steps_taken);
  Statement update(db_,
                   "UPDATE runs SET state = 'completed', steps = ?2, finished = ?3 WHERE id = ?1");
  update.bind(1, id).bind(2, steps_taken).bind(3, utc_now()).step();
  t.commit();
}

void PrivacyLedger::abort(int64_t id) {
  Transaction t(db_);
  Statement update(db_,
                   "UPDATE runs SET state = 'aborted', finished = ?2 WHERE id = ?1 AND state = "
                   "'planned'");
  update.bind(1, id).bind(2, utc_now()).step();
  if (sqlite3_changes(db_) != 1) fail("privacy ledger: no planned run ", id);
  t.commit();
}

std::vector<LedgerRun> PrivacyLedger::runs(const std::string& user) const {
  return select_runs(db_, user);
}

std::vector<UserBudget> PrivacyLedger::budgets(double delta, const std::string& user) const {
  std::map<std::string, std::vector<LedgerRun>> by_user;
  for (LedgerRun& r : select_runs(db_, user)) by_user[r.user].push_back(std::move(r));
  std::vector<UserBudget> out;
  for (const auto& [did, runs] : by_user) {
    const PrivacySpent spent = spent_by(runs, delta);
    int64_t counted = 0;
    for (const LedgerRun& r : runs) counted += r.state != "aborted";
    out.push_back({did, counted, spent.epsilon, spent.order});
  }
  return out;
}

}  // namespace bd
