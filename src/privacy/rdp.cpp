#include "privacy/rdp.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "core/error.h"

namespace bd {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(e^a + e^b) and log(e^a − e^b) (a ≥ b) without overflow; −inf stands for 0.
double log_add(double a, double b) {
  const double low = std::min(a, b), high = std::max(a, b);
  if (low == -kInf) return high;
  return std::log1p(std::exp(low - high)) + high;
}

double log_sub(double a, double b) {
  if (a < b) fail("privacy accountant: the RDP series lost its precision (log A went negative)");
  if (b == -kInf) return a;
  if (a == b) return -kInf;
  return std::log(std::expm1(a - b)) + b;
}

// log(erfc(x)), accurate where erfc underflows: beyond x = 25 the asymptotic series
// erfc(x) = e^{−x²} / (x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) − …), whose next term
// there is below 1e-12.
double log_erfc(double x) {
  if (x < 25) return std::log(std::erfc(x));
  const double r = 1 / (x * x);
  const double series = 1 - r / 2 + 3 * r * r / 4 - 15 * r * r * r / 8 + 105 * r * r * r * r / 16;
  return -x * x - std::log(x) - 0.5 * std::log(std::numbers::pi) + std::log(series);
}

// log A_α for integer α: A_α = Σ_{i=0}^{α} C(α, i) q^i (1 − q)^{α−i} exp((i² − i) / (2σ²)).
double log_a_integer(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  const double a = double(alpha);
  for (int64_t i = 0; i <= alpha; ++i) {
    const double k = double(i);
    const double log_binomial = std::lgamma(a + 1) - std::lgamma(k + 1) - std::lgamma(a - k + 1);
    const double term = log_binomial + k * std::log(q) + (a - k) * std::log1p(-q) +
                        (k * k - k) / (2 * sigma * sigma);
    log_a = log_add(log_a, term);
  }
  return log_a;
}

// log A_α for fractional α: A_α splits at z0 = σ² log(1/q − 1) + 1/2 into two integrals, each an
// alternating binomial series with erfc factors (Mironov, Talwar, Zhang 2019, Section 3.3),
// summed in log space until both new terms are below e^-30.
double log_a_fractional(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  double log_coefficient = 0;  // log |C(α, i)|, starting at C(α, 0) = 1
  bool positive = true;
  for (int64_t i = 0;; ++i) {
    const double k = double(i), j = alpha - k;
    const double log_t0 = log_coefficient + k * std::log(q) + j * std::log1p(-q);
    const double log_t1 = log_coefficient + j * std::log(q) + k * std::log1p(-q);
    const double log_e0 = std::log(0.5) + log_erfc((k - z0) / (std::sqrt(2.0) * sigma));
    const double log_e1 = std::log(0.5) + log_erfc((z0 - j) / (std::sqrt(2.0) * sigma));
    const double log_s0 = log_t0 + (k * k - k) / (2 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2 * sigma * sigma) + log_e1;
    if (positive) {
      log_a0 = log_add(log_a0, log_s0);
      log_a1 = log_add(log_a1, log_s1);
    } else {
      log_a0 = log_sub(log_a0, log_s0);
      log_a1 = log_sub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30) break;
    // C(α, i + 1) = C(α, i) · (α − i) / (i + 1); the sign flips once α − i turns negative.
    const double factor = alpha - k;
    log_coefficient += std::log(std::fabs(factor)) - std::log(k + 1);
    if (factor < 0) positive = !positive;
  }
  return log_add(log_a0, log_a1);
}

void check_order(double alpha) {
  if (!(alpha > 1) || !std::isfinite(alpha))
    fail("privacy accountant: RDP orders must be finite and > 1, got ", alpha);
}

}  // namespace

std::vector<double> opacus_orders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1 + x / 10.0);
  for (int a = 12; a < 64; ++a) orders.push_back(a);
  return orders;
}

std::vector<double> tf_orders() {
  std::vector<double> orders = {1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5};
  for (int a = 5; a < 64; ++a) orders.push_back(a);
  for (double a : {128., 256., 512.}) orders.push_back(a);
  return orders;
}

double subsampled_gaussian_rdp(double q, double sigma, double alpha) {
  if (!(q >= 0 && q <= 1)) fail("privacy accountant: sample rate must be in [0, 1], got ", q);
  if (!(sigma >= 0) || !std::isfinite(sigma))
    fail("privacy accountant: noise multiplier must be finite and >= 0, got ", sigma);
  check_order(alpha);
  if (q == 0) return 0;
  if (sigma == 0) return kInf;
  if (q == 1) return alpha / (2 * sigma * sigma);
  const double log_a = alpha == std::floor(alpha) ? log_a_integer(q, sigma, int64_t(alpha))
                                                  : log_a_fractional(q, sigma, alpha);
  return log_a / (alpha - 1);
}

std::vector<double> rdp_curve(std::span<const PrivateRun> runs, std::span<const double> orders) {
  std::vector<double> curve(orders.size(), 0.0);
  for (const PrivateRun& run : runs) {
    if (run.steps < 0) fail("privacy accountant: negative step count ", run.steps);
    for (size_t k = 0; k < orders.size(); ++k) {
      const double rdp = subsampled_gaussian_rdp(run.sample_rate, run.noise_multiplier, orders[k]);
      if (run.steps > 0) curve[k] += double(run.steps) * rdp;
    }
  }
  return curve;
}

PrivacySpent epsilon_from_rdp(std::span<const double> orders, std::span<const double> rdp,
                              double delta, RdpConversion conversion) {
  if (!(delta > 0 && delta < 1)) fail("privacy accountant: delta must be in (0, 1), got ", delta);
  if (orders.empty() || orders.size() != rdp.size())
    fail("privacy accountant: ", orders.size(), " orders for an RDP curve of ", rdp.size());
  for (double alpha : orders) check_order(alpha);
  if (std::all_of(rdp.begin(), rdp.end(), [](double r) { return r == 0; })) return {0, 0};
  PrivacySpent best{kInf, 0};
  for (size_t k = 0; k < orders.size(); ++k) {
    const double a = orders[k];
    if (std::isnan(rdp[k]) || rdp[k] < 0) fail("privacy accountant: invalid RDP value ", rdp[k]);
    const double epsilon =
        conversion == RdpConversion::kImproved
            ? rdp[k] + std::log((a - 1) / a) - (std::log(delta) + std::log(a)) / (a - 1)
            : rdp[k] + std::log(1 / delta) / (a - 1);
    if (epsilon < best.epsilon) best = {epsilon, a};
  }
  best.epsilon = std::max(best.epsilon, 0.0);  // an (ε, δ) guarantee with ε < 0 holds for ε = 0
  return best;
}

NoiseForTarget noise_for_epsilon(double target_epsilon, double delta, double sample_rate,
                                 int64_t steps, std::span<const double> orders,
                                 RdpConversion conversion, double epsilon_tolerance) {
  if (!(target_epsilon > 0) || !std::isfinite(target_epsilon))
    fail("privacy accountant: target epsilon must be finite and > 0, got ", target_epsilon);
  if (!(epsilon_tolerance > 0)) fail("privacy accountant: epsilon tolerance must be > 0");
  auto epsilon_at = [&](double sigma) {
    const PrivateRun run{sample_rate, sigma, steps};
    return epsilon_from_rdp(orders, rdp_curve({&run, 1}, orders), delta, conversion).epsilon;
  };
  constexpr double kMaxSigma = 1e6;
  double sigma_low = 0, sigma_high = 10, epsilon_high = kInf;
  while (epsilon_high > target_epsilon) {
    sigma_high *= 2;
    epsilon_high = epsilon_at(sigma_high);
    if (sigma_high > kMaxSigma)
      fail("privacy accountant: epsilon ", target_epsilon, " at delta ", delta,
           " is out of reach (it would need a noise multiplier above 1e6)");
  }
  while (target_epsilon - epsilon_high > epsilon_tolerance) {
    const double sigma = (sigma_low + sigma_high) / 2;
    const double epsilon = epsilon_at(sigma);
    if (epsilon < target_epsilon) {
      sigma_high = sigma;
      epsilon_high = epsilon;
    } else {
      sigma_low = sigma;
    }
  }
  return {sigma_high, epsilon_high};
}

}  // namespace bd
