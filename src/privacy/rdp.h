// Rényi differential privacy (RDP) of the Poisson-subsampled Gaussian mechanism, the noise of
// DP-SGD: each step includes every example independently with probability q (the sample rate),
// clips each example's gradient to norm C and adds N(0, σ²C²) to the sum (σ: the noise
// multiplier). RDP composes by addition over steps and runs; an RDP curve converts to an
// (ε, δ) guarantee. docs/privacy.md has the formulas and their sources.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace bd {

// RDP orders α (> 1) at which a curve is kept.
// Opacus's RDPAccountant default: 1.1, 1.2, …, 10.9, then 12, 13, …, 63.
std::vector<double> opacus_orders();
// TF Privacy's compute_dp_sgd_privacy: 1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 5, 6, …,
// 63, 128, 256, 512.
std::vector<double> tf_orders();

// RDP at order α of one step of the subsampled Gaussian mechanism (Mironov, Talwar, Zhang 2019,
// "Rényi Differential Privacy of the Sampled Gaussian Mechanism", Section 3.3): log(A_α)/(α − 1),
// A_α a finite binomial sum for integer α, and for fractional α a series of erfc terms summed
// until both tails fall below e^-30. q = 0 gives 0, q = 1 the Gaussian's α/(2σ²), σ = 0 +inf.
// Throws bd::Error unless q ∈ [0, 1], σ ≥ 0 and α > 1 (all finite).
double subsampled_gaussian_rdp(double q, double sigma, double alpha);

// `steps` steps of the mechanism with sample rate q and noise multiplier σ.
struct PrivateRun {
  double sample_rate = 0;
  double noise_multiplier = 0;
  int64_t steps = 0;
};

// The RDP curve of runs composed one after another: Σ_runs steps · RDP(q, σ, α) per order.
std::vector<double> rdp_curve(std::span<const PrivateRun> runs, std::span<const double> orders);

// RDP → (ε, δ). Improved (Balle et al. 2020, "Hypothesis Testing Interpretations and Rényi
// Differential Privacy", Theorem 21; what Opacus and TF Privacy use):
//   ε = min_α rdp(α) + log((α − 1)/α) − (log δ + log α)/(α − 1);
// classic (Mironov 2017, "Rényi Differential Privacy", Proposition 3):
//   ε = min_α rdp(α) + log(1/δ)/(α − 1).
enum class RdpConversion { kImproved, kClassic };

struct PrivacySpent {
  double epsilon = 0;  // +inf when every order is infinite (no noise)
  double order = 0;    // the α that gives it (0 when ε is 0 or +inf)
};

// ε at δ of an RDP curve. A curve that is 0 at every order (nothing sampled) gives ε = 0: the
// mechanism then reveals nothing, while the formulas above would still give a small positive ε.
// Throws unless δ ∈ (0, 1), orders and curve have the same non-zero length, and every order > 1.
PrivacySpent epsilon_from_rdp(std::span<const double> orders, std::span<const double> rdp,
                              double delta, RdpConversion conversion = RdpConversion::kImproved);

// The smallest noise multiplier (to the search's tolerance) whose ε after `steps` steps at sample
// rate q stays at or below target_epsilon: Opacus's get_noise_multiplier search (double σ from 10
// until ε ≤ target, then bisect until ε is within epsilon_tolerance below the target), so the
// result never exceeds the target. Throws when the target needs σ above 1e6.
struct NoiseForTarget {
  double noise_multiplier = 0;
  double epsilon = 0;  // ε at that σ, ≤ target_epsilon
};
NoiseForTarget noise_for_epsilon(double target_epsilon, double delta, double sample_rate,
                                 int64_t steps, std::span<const double> orders,
                                 RdpConversion conversion = RdpConversion::kImproved,
                                 double epsilon_tolerance = 0.01);

}  // namespace bd
