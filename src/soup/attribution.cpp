#include "soup/attribution.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "core/error.h"

namespace bd {

namespace {

// q(S), cached by subset.
class Quality {
 public:
  Quality(const std::vector<std::string>& paths, const SoupOptions& options,
          SoupEvaluator& evaluator)
      : paths_(paths), options_(options), evaluator_(evaluator) {}

  double operator()(std::vector<int64_t> subset) {
    if (subset.empty()) return 0.0;
    std::sort(subset.begin(), subset.end());
    const auto cached = cache_.find(subset);
    if (cached != cache_.end()) return cached->second;
    std::vector<std::string> chosen;
    for (int64_t k : subset) chosen.push_back(paths_[size_t(k)]);
    SoupOptions options = options_;
    try {
      check_soup_params(options.params, int64_t(subset.size()));
    } catch (const Error&) {
      options.params = SoupParams{};  // too few for the rule: the mean
    }
    const double q = evaluator_.base_nll() - evaluator_.score(chosen, options).nll;
    cache_[subset] = q;
    return q;
  }

 private:
  const std::vector<std::string>& paths_;
  SoupOptions options_;
  SoupEvaluator& evaluator_;
  std::map<std::vector<int64_t>, double> cache_;
};

}  // namespace

std::vector<int64_t> to_basis_points(const std::vector<double>& values) {
  const size_t n = values.size();
  std::vector<double> clipped(n);
  for (size_t k = 0; k < n; ++k) clipped[k] = std::max(0.0, values[k]);
  double total = std::accumulate(clipped.begin(), clipped.end(), 0.0);
  if (!(total > 0)) {
    std::fill(clipped.begin(), clipped.end(), 1.0);
    total = double(n);
  }
  std::vector<int64_t> points(n);
  std::vector<std::pair<double, size_t>> remainders;
  int64_t assigned = 0;
  for (size_t k = 0; k < n; ++k) {
    const double exact = 10000.0 * clipped[k] / total;
    points[k] = int64_t(std::floor(exact));
    assigned += points[k];
    remainders.push_back({exact - double(points[k]), k});
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; assigned < 10000; ++i, ++assigned) ++points[remainders[i % n].second];
  return points;
}

Attribution attribute(const std::vector<std::string>& paths, const SoupOptions& options,
                      SoupEvaluator& evaluator, AttributionMethod method, int64_t permutations,
                      uint64_t seed) {
  const int64_t n = int64_t(paths.size());
  if (n < 1) fail("attribution needs at least one contribution");
  Quality quality(paths, options, evaluator);
  const int64_t before = evaluator.evaluations();
  std::vector<int64_t> everyone(static_cast<size_t>(n));
  std::iota(everyone.begin(), everyone.end(), 0);
  const double whole = quality(everyone);
  Attribution out;
  out.marginal.assign(size_t(n), 0.0);
  if (method == AttributionMethod::loo) {
    for (int64_t k = 0; k < n; ++k) {
      std::vector<int64_t> others;
      for (int64_t j = 0; j < n; ++j)
        if (j != k) others.push_back(j);
      out.marginal[size_t(k)] = whole - quality(others);
    }
  } else {
    if (permutations < 1) fail("--permutations must be at least 1, got ", permutations);
    std::mt19937_64 rng(seed);
    for (int64_t p = 0; p < permutations; ++p) {
      std::vector<int64_t> order = everyone;
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<int64_t> prefix;
      double previous = 0;
      for (int64_t k : order) {
        prefix.push_back(k);
        if (std::abs(whole - previous) <= 0.01 * std::abs(whole)) continue;  // truncated
        const double q = quality(prefix);
        out.marginal[size_t(k)] += (q - previous) / double(permutations);
        previous = q;
      }
    }
  }
  out.basis_points = to_basis_points(out.marginal);
  out.evaluations = evaluator.evaluations() - before;
  return out;
}

}  // namespace bd
