// The RDP accountant (privacy/rdp.h) against published values of the reference DP libraries'
// test suites and against an independent multi-precision integration (tests/reference/rdp_ref.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "privacy/rdp.h"
#include "test_util.h"

namespace bd {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double epsilon_of(std::vector<PrivateRun> runs, double delta, const std::vector<double>& orders,
                  RdpConversion conversion = RdpConversion::kImproved) {
  return epsilon_from_rdp(orders, rdp_curve(runs, orders), delta, conversion).epsilon;
}

// Opacus, opacus/tests/accountants_test.py, test_rdp_accountant: σ = 1.5, q = 0.04,
// int(90 / 0.04) = 2250 steps, δ = 1e-5, default orders: ε = 7.32911117143 (assertAlmostEqual,
// 7 places). The bar is 1e-7 absolute.
TEST(RdpAccountant, MatchesOpacusTestSuite) {
  const double epsilon = epsilon_of({{0.04, 1.5, 2250}}, 1e-5, opacus_orders());
  EXPECT_NEAR(epsilon, 7.32911117143, 1e-7);
}

// Opacus, accountants_test.py, test_get_noise_multiplier_rdp_epochs and _steps: ε = 8, δ = 1e-5,
// q = 0.04, 90 epochs (2250 steps) → σ ≈ 1.416, 2000 steps → σ ≈ 1.3562 (4 places); and the
// overshoot test: the ε reached never exceeds the target.
TEST(RdpAccountant, NoiseSearchMatchesOpacus) {
  const std::vector<double> orders = opacus_orders();
  const NoiseForTarget epochs = noise_for_epsilon(8, 1e-5, 0.04, int64_t(90 / 0.04), orders);
  EXPECT_NEAR(epochs.noise_multiplier, 1.416, 5e-5);
  const NoiseForTarget steps = noise_for_epsilon(8, 1e-5, 0.04, 2000, orders);
  EXPECT_NEAR(steps.noise_multiplier, 1.3562, 5e-5);
  EXPECT_DOUBLE_EQ(epochs.epsilon,
                   epsilon_of({{0.04, epochs.noise_multiplier, 2250}}, 1e-5, orders));
  EXPECT_DOUBLE_EQ(steps.epsilon, epsilon_of({{0.04, steps.noise_multiplier, 2000}}, 1e-5, orders));
  for (const NoiseForTarget& found : {epochs, steps}) {
    EXPECT_LE(found.epsilon, 8.0);
    EXPECT_GT(found.epsilon, 8.0 - 0.01);
  }
  for (double target : {1.0, 3.7, 10.0})
    for (double q : {1e-4, 1e-2, 1e-1}) {
      const int64_t T = int64_t(20 / q);
      const NoiseForTarget found = noise_for_epsilon(target, 1e-6, q, T, orders);
      EXPECT_LT(epsilon_of({{q, found.noise_multiplier, T}}, 1e-6, orders), target);
    }
}

// TF Privacy, tensorflow_privacy/privacy/analysis/rdp_accountant_test.py.
TEST(RdpAccountant, MatchesTfPrivacyTestSuite) {
  // test_compute_rdp_no_data, test_compute_rdp_no_sampling: q = 0 → 0; q = 1 → α / (2σ²).
  EXPECT_EQ(subsampled_gaussian_rdp(0, 10, 20), 0);
  EXPECT_EQ(subsampled_gaussian_rdp(1, 10, 20), 0.1);
  // test_compute_heterogeneous_rdp_different_sampling_probabilities: runs (0, 10, 1) and
  // (1, 10, 1) at order 20 → 0.1.
  const std::vector<double> order20 = {20};
  const std::vector<PrivateRun> runs = {{0, 10, 1}, {1, 10, 1}};
  EXPECT_EQ(rdp_curve(runs, order20)[0], 0.1);
  // test_compute_rdp_scalar: q = 0.1, σ = 2, 10 steps, α = 5 → 0.07737 (5 places).
  const std::vector<double> order5 = {5};
  const PrivateRun scalar{0.1, 2, 10};
  EXPECT_NEAR(rdp_curve({&scalar, 1}, order5)[0], 0.07737, 5e-6);
  // test_compute_rdp_sequence: q = 0.01, σ = 2.5, 50 steps (delta = 1e-5).
  const std::vector<double> orders = {1.5, 2.5, 5, 50, 100};
  const std::vector<double> want = {0.00065, 0.001085, 0.00218075, 0.023846, 167.416307};
  const PrivateRun sequence{0.01, 2.5, 50};
  const std::vector<double> got = rdp_curve({&sequence, 1}, orders);
  for (size_t k = 0; k < orders.size(); ++k) EXPECT_NEAR(got[k], want[k], 1e-5) << orders[k];
  // test_get_privacy_spent_check_target_delta: a constant curve of 1.1 at orders 2..32,
  // δ = 1e-5 → ε = 1.32783806176 at order 32; the Gaussian with σ = 4.530877117 (q = 1) on
  // orders 1.000 .. 99.999 is (1, 1e-6)-DP.
  std::vector<double> integer_orders, constant;
  for (int a = 2; a <= 32; ++a) integer_orders.push_back(a), constant.push_back(1.1);
  const PrivacySpent spent = epsilon_from_rdp(integer_orders, constant, 1e-5);
  EXPECT_NEAR(spent.epsilon, 1.32783806176, 5e-8);
  EXPECT_EQ(spent.order, 32);
  std::vector<double> fine;
  for (int i = 1001; i < 100000; ++i) fine.push_back(0.001 * i);  // TF starts at 1.000
  EXPECT_NEAR(epsilon_of({{1, 4.530877117, 1}}, 1e-6, fine), 1.0, 5e-8);
  // test_check_composition: the classic bound gave 8.509656 and the improved one stays below.
  const std::vector<double> composition_orders = {1.25, 1.5, 1.75, 2.,  2.5, 3.,  4.,
                                                  5.,   6.,  7.,   8.,  10., 12., 14.,
                                                  16.,  20., 24.,  28., 32., 64., 256.};
  const std::vector<PrivateRun> composed = {{1e-4, 0.4, 40000}, {0.1, 2, 100}};
  EXPECT_NEAR(epsilon_of(composed, 1e-5, composition_orders, RdpConversion::kClassic), 8.509656,
              5e-6);
  EXPECT_LE(epsilon_of(composed, 1e-5, composition_orders), 8.509656);
}

// RDP against the integral of its definition (rdp_ref.py, mpmath at 40 digits), integer and
// fractional orders, every order list's range: relative 1e-9 plus 1e-12 absolute per step (the
// fractional series stops at terms below e^-30 ≈ 1e-13; measured up to 1.8e-13).
TEST(RdpAccountant, MatchesMultiPrecisionIntegration) {
  const std::vector<std::vector<double>> cases = {
      {0.01, 1.0, 1.5}, {0.04, 1.5, 2.5}, {0.04, 1.5, 10.9}, {0.1, 2.0, 5},    {0.001, 0.8, 32},
      {0.5, 3.0, 7.3},  {0.01, 2.5, 1.1}, {0.2, 1.0, 63},    {1e-4, 0.6, 4.5}, {0.9, 5.0, 2.25}};
  test::ScratchDir scratch;
  std::ofstream(scratch / "cases.json") << nlohmann::json(cases).dump();
  const test::CommandResult reference = test::run_reference(
      "rdp_ref.py", test::shell_quote(scratch / "cases.json"), scratch);
  if (reference.exit_code != 0 &&
      reference.err.find("No module named 'mpmath'") != std::string::npos)
    GTEST_SKIP() << "needs /usr/bin/python3 with mpmath (python3-mpmath)";
  ASSERT_EQ(reference.exit_code, 0) << reference.err;
  const std::vector<double> want = nlohmann::json::parse(reference.out).get<std::vector<double>>();
  ASSERT_EQ(want.size(), cases.size());
  for (size_t k = 0; k < cases.size(); ++k) {
    const double got = subsampled_gaussian_rdp(cases[k][0], cases[k][1], cases[k][2]);
    EXPECT_NEAR(got, want[k], 1e-9 * want[k] + 1e-12)
        << "q=" << cases[k][0] << " sigma=" << cases[k][1] << " alpha=" << cases[k][2];
  }
}

TEST(RdpAccountant, EdgeCases) {
  const std::vector<double> orders = opacus_orders();
  EXPECT_EQ(subsampled_gaussian_rdp(0.3, 0, 2.5), kInf);  // σ = 0: no privacy
  EXPECT_EQ(epsilon_of({{0.3, 0, 10}}, 1e-5, orders), kInf);
  EXPECT_EQ(epsilon_of({{0, 1.0, 1000}}, 1e-5, orders), 0);       // nothing sampled
  EXPECT_EQ(epsilon_of({{0.5, 1.0, 0}}, 1e-5, orders), 0);        // no steps
  EXPECT_DOUBLE_EQ(subsampled_gaussian_rdp(1, 2, 3.5), 3.5 / 8);  // q = 1: the Gaussian
  // More steps, more noise and a smaller sampling rate move ε the way they must.
  const double base = epsilon_of({{0.01, 1.0, 1000}}, 1e-5, orders);
  EXPECT_GT(epsilon_of({{0.01, 1.0, 2000}}, 1e-5, orders), base);
  EXPECT_LT(epsilon_of({{0.01, 1.2, 1000}}, 1e-5, orders), base);
  EXPECT_LT(epsilon_of({{0.005, 1.0, 1000}}, 1e-5, orders), base);
  // Composition: two runs equal one run of their summed steps.
  EXPECT_DOUBLE_EQ(epsilon_of({{0.01, 1.0, 400}, {0.01, 1.0, 600}}, 1e-5, orders), base);
  // The classic bound is never tighter than the improved one.
  EXPECT_GE(epsilon_of({{0.01, 1.0, 1000}}, 1e-5, orders, RdpConversion::kClassic), base);
}

TEST(RdpAccountant, RejectsInvalidInputs) {
  const std::vector<double> orders = opacus_orders();
  const std::vector<double> curve(orders.size(), 0.5);
  EXPECT_THROW(subsampled_gaussian_rdp(-0.1, 1, 2), Error);
  EXPECT_THROW(subsampled_gaussian_rdp(1.1, 1, 2), Error);
  EXPECT_THROW(subsampled_gaussian_rdp(std::nan(""), 1, 2), Error);
  EXPECT_THROW(subsampled_gaussian_rdp(0.1, -1, 2), Error);
  EXPECT_THROW(subsampled_gaussian_rdp(0.1, 1, 1), Error);
  EXPECT_THROW(subsampled_gaussian_rdp(0.1, 1, kInf), Error);
  EXPECT_THROW(epsilon_from_rdp(orders, curve, 0), Error);
  EXPECT_THROW(epsilon_from_rdp(orders, curve, 1), Error);
  EXPECT_THROW(epsilon_from_rdp(orders, std::vector<double>(3, 0.5), 1e-5), Error);
  EXPECT_THROW(noise_for_epsilon(0, 1e-5, 0.01, 100, orders), Error);
  EXPECT_THROW(noise_for_epsilon(1e-9, 1e-5, 1.0, 100000, orders), Error);  // out of reach
  const PrivateRun negative{0.1, 1, -3};
  EXPECT_THROW(rdp_curve({&negative, 1}, orders), Error);
}

// The CLI: the Opacus value, --run composition, --json, infinite epsilon, and one clear line for
// bad input.
TEST(PrivacyCli, EpsilonAndNoise) {
  test::ScratchDir scratch;
  auto run = [&](const std::string& arguments) { return test::run_bitdelta(arguments, scratch); };
  test::CommandResult r = run(
      "privacy epsilon --sample-rate 0.04 --noise-multiplier 1.5 --steps 2250 --delta 1e-5 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json out = nlohmann::json::parse(r.out);
  EXPECT_NEAR(out["epsilon"].get<double>(), 7.32911117143, 1e-7);
  r = run("privacy epsilon --run 0.04,1.5,1000 --run 0.04,1.5,1250 --delta 1e-5 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NEAR(nlohmann::json::parse(r.out)["epsilon"].get<double>(), 7.32911117143, 1e-7);
  r = run("privacy epsilon --run 0.04,0,10 --delta 1e-5 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["infinite"], true);
  r =
      run("privacy epsilon --run 0.01,2.5,50 --delta 1e-5 --orders 1.5,2.5,5,50,100 --conversion "
          "classic");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("epsilon "), std::string::npos);
  r = run("privacy noise --target-epsilon 8 --delta 1e-5 --sample-rate 0.04 --epochs 90 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NEAR(nlohmann::json::parse(r.out)["noise_multiplier"].get<double>(), 1.416, 5e-5);
  EXPECT_EQ(nlohmann::json::parse(r.out)["steps"], 2250);
  for (const char* bad :
       {"privacy epsilon --sample-rate 1.5 --noise-multiplier 1 --steps 10 --delta 1e-5",
        "privacy epsilon --sample-rate 0.1 --noise-multiplier -1 --steps 10 --delta 1e-5",
        "privacy epsilon --sample-rate 0.1 --noise-multiplier 1 --steps 10 --delta 1",
        "privacy epsilon --run 0.1,1 --delta 1e-5",
        "privacy epsilon --run 0.1,1,10 --steps 5 --delta 1e-5",
        "privacy epsilon --run 0.1,1,10 --delta 1e-5 --orders 0.5,2",
        "privacy noise --target-epsilon 1 --delta 1e-5 --sample-rate 0.1",
        "privacy noise --target-epsilon -1 --delta 1e-5 --sample-rate 0.1 --steps 10",
        "privacy frobnicate"}) {
    r = run(bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << bad << ": " << r.err;
  }
}

}  // namespace
}  // namespace bd
