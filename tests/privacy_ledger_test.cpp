// The privacy budget ledger (privacy/ledger.h): composition over a user's runs, the cap enforced
// before a run starts, planned runs counted until they complete, atomic reservations from
// concurrent processes, and files that are not ledgers.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "privacy/ledger.h"
#include "test_util.h"

namespace bd {
namespace {

constexpr double kDelta = 1e-5;
const std::string kAlice = "did:lux:1:0x1111111111111111111111111111111111111111";
const std::string kBob = "did:lux:1:0x2222222222222222222222222222222222222222";

double epsilon_of(const std::vector<PrivateRun>& runs) {
  const std::vector<double> orders = opacus_orders();
  return epsilon_from_rdp(orders, rdp_curve(runs, orders), kDelta).epsilon;
}

TEST(PrivacyLedger, ComposesEachUsersRunsAndEnforcesTheCap) {
  test::ScratchDir scratch;
  const std::string path = scratch / "ledger.sqlite";
  const PrivateRun run{0.04, 1.5, 1000};
  {
    PrivacyLedger ledger(path);
    const int64_t first = ledger.reserve(kAlice, run, kDelta, 8, "first");
    ledger.complete(first, 1000);
    const int64_t second = ledger.reserve(kAlice, run, kDelta, 8);
    ledger.complete(second, 250);          // stopped early: only the steps taken count
    ledger.reserve(kBob, run, kDelta, 8);  // planned, never completed (a crash): counts in full
  }
  PrivacyLedger ledger(path);  // reopened: everything was committed
  const std::vector<UserBudget> budgets = ledger.budgets(kDelta);
  ASSERT_EQ(budgets.size(), 2u);
  EXPECT_EQ(budgets[0].user, kAlice);
  EXPECT_EQ(budgets[0].runs, 2);
  EXPECT_DOUBLE_EQ(budgets[0].epsilon, epsilon_of({{0.04, 1.5, 1250}}));
  EXPECT_EQ(budgets[1].user, kBob);
  EXPECT_DOUBLE_EQ(budgets[1].epsilon, epsilon_of({run}));

  // A run that would take Alice past the cap is refused, and nothing is written.
  const double spent = budgets[0].epsilon;
  const PrivateRun big{0.04, 1.5, 20000};
  ASSERT_GT(epsilon_of({{0.04, 1.5, 21250}}), 8);
  try {
    ledger.reserve(kAlice, big, kDelta, 8);
    FAIL() << "the cap was not enforced";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("privacy budget exceeded for " + kAlice),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(ledger.runs(kAlice).size(), 2u);
  EXPECT_DOUBLE_EQ(ledger.budgets(kDelta, kAlice)[0].epsilon, spent);

  // Aborted runs spend nothing; a run cannot complete twice or with more steps than planned.
  const int64_t third = ledger.reserve(kAlice, run, kDelta, 8);
  EXPECT_THROW(ledger.complete(third, 1001), Error);
  ledger.abort(third);
  EXPECT_DOUBLE_EQ(ledger.budgets(kDelta, kAlice)[0].epsilon, spent);
  EXPECT_THROW(ledger.complete(third, 10), Error);
  EXPECT_THROW(ledger.abort(third), Error);
  EXPECT_EQ(ledger.runs(kAlice).back().state, "aborted");

  // Invalid runs are refused before anything is written.
  EXPECT_THROW(ledger.reserve("", run, kDelta, 8), Error);
  EXPECT_THROW(ledger.reserve(kAlice, {1.5, 1, 10}, kDelta, 8), Error);
  EXPECT_THROW(ledger.reserve(kAlice, run, 0, 8), Error);
  EXPECT_THROW(ledger.reserve(kAlice, run, kDelta, 0), Error);
  EXPECT_EQ(ledger.runs().size(), 4u);
}

// Processes reserving at the same time never overspend: each reservation reads the total and
// writes its run in one immediate transaction.
TEST(PrivacyLedger, ConcurrentReservationsNeverExceedTheCap) {
  test::ScratchDir scratch;
  const std::string path = scratch / "ledger.sqlite";
  { PrivacyLedger create(path); }
  const PrivateRun run{0.04, 1.5, 500};
  const double cap = 6;
  int fits = 0;
  while (epsilon_of(std::vector<PrivateRun>(size_t(fits + 1), run)) <= cap) ++fits;
  ASSERT_GE(fits, 2);
  std::vector<pid_t> children;
  for (int c = 0; c < 4; ++c) {
    const pid_t pid = fork();
    if (pid == 0) {
      int code = 0;
      try {
        PrivacyLedger ledger(path);
        for (int k = 0; k < fits; ++k) {
          try {
            ledger.reserve(kAlice, run, kDelta, cap);
          } catch (const Error&) {
          }
        }
      } catch (...) {
        code = 1;
      }
      _exit(code);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  PrivacyLedger ledger(path);
  EXPECT_EQ(int(ledger.runs(kAlice).size()), fits);
  EXPECT_LE(ledger.budgets(kDelta, kAlice)[0].epsilon, cap);
}

TEST(PrivacyLedger, RejectsFilesThatAreNotLedgers) {
  test::ScratchDir scratch;
  const std::string text = scratch / "notes.txt";
  std::ofstream(text) << "not a database at all, just some text\n";
  EXPECT_THROW(PrivacyLedger{text}, Error);
  EXPECT_EQ(read_file(text), "not a database at all, just some text\n");  // untouched
}

TEST(PrivacyLedger, CliShowsSpentAndRemaining) {
  test::ScratchDir scratch;
  const std::string path = scratch / "ledger.sqlite";
  {
    PrivacyLedger ledger(path);
    ledger.complete(ledger.reserve(kAlice, {0.04, 1.5, 2250}, kDelta, 8), 2250);
  }
  test::CommandResult r = test::run_bitdelta(
      "privacy ledger --ledger " + test::shell_quote(path) + " --runs --json", scratch);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json out = nlohmann::json::parse(r.out);
  ASSERT_EQ(out["users"].size(), 1u);
  EXPECT_EQ(out["users"][0]["user"], kAlice);
  EXPECT_NEAR(out["users"][0]["epsilon"].get<double>(), 7.32911117143, 1e-7);
  EXPECT_NEAR(out["users"][0]["remaining"].get<double>(), 8 - 7.32911117143, 1e-7);
  EXPECT_EQ(out["runs"][0]["state"], "completed");
  r = test::run_bitdelta("privacy ledger --ledger " + test::shell_quote(path) + " --user " + kBob,
                         scratch);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no private runs of " + kBob), std::string::npos) << r.err;
  r = test::run_bitdelta("privacy ledger --ledger " + test::shell_quote(scratch / "missing.sqlite"),
                         scratch);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(scratch / "missing.sqlite"));
}

}  // namespace
}  // namespace bd
