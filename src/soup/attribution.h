// Attribution for royalties: each contributor's marginal effect on the soup's held-out quality,
// q(S) = NLL(base) − NLL(base + soup of S) (q(∅) = 0), by
//   - leave-one-out: φ_k = q(all) − q(all \ {k});
//   - truncated Monte-Carlo Shapley (Ghorbani and Zou 2019, "Data Shapley"): over K seeded
//     random orders, φ_k += q(before k, and k) − q(before k), averaged; once q of a prefix is
//     within 1% of |q(all)| of q(all), the rest of that order adds 0 (truncation).
// A subset too small for the rule's parameters (e.g. Krum's n > 2f + 2) is aggregated by the
// mean. Negative effects are clipped to 0 and the rest normalised to basis points summing to
// exactly 10,000 (largest remainders; ties to the earlier contributor); when no contributor
// helps, the shares are equal.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "soup/soup_quality.h"

namespace bd {

enum class AttributionMethod { loo, shapley };

struct Attribution {
  std::vector<double> marginal;       // φ_k, nats, before clipping
  std::vector<int64_t> basis_points;  // Σ = 10,000
  int64_t evaluations = 0;            // soups scored
};

// `paths` in canonical order (SoupInputs::contributions).
Attribution attribute(const std::vector<std::string>& paths, const SoupOptions& options,
                      SoupEvaluator& evaluator, AttributionMethod method, int64_t permutations,
                      uint64_t seed);

// max(0, v) normalised to basis points summing to exactly 10,000.
std::vector<int64_t> to_basis_points(const std::vector<double>& values);

}  // namespace bd
