#include "soup/greedy.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace bd {

namespace {

SoupOptions weighted(const std::vector<double>& weights, GreedyMode mode) {
  SoupOptions options;
  options.fixed_weights = weights;
  options.label = mode == GreedyMode::additive ? "greedy-additive" : "greedy-average";
  options.quiet = true;
  return options;
}

}  // namespace

GreedyResult greedy_soup(const std::vector<std::string>& paths, SoupEvaluator& evaluator,
                         GreedyMode mode, double step) {
  const size_t n = paths.size();
  if (n == 0) fail("a greedy soup needs at least one candidate");
  if (mode == GreedyMode::additive && !(step > 0)) fail("--step must be > 0, got ", step);
  const double single = mode == GreedyMode::additive ? step : 1.0;
  GreedyResult result;
  for (size_t k = 0; k < n; ++k) {  // each candidate on its own, to rank them
    std::vector<double> w(n, 0.0);
    w[k] = single;
    result.alone_nll.push_back(evaluator.score(paths, weighted(w, mode)).nll);
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return result.alone_nll[a] < result.alone_nll[b]; });
  result.weights.assign(n, 0.0);
  result.nll = evaluator.base_nll();
  std::vector<size_t> kept;
  for (size_t k : order) {
    std::vector<double> trial = result.weights;
    if (mode == GreedyMode::additive) {
      trial[k] += step;
    } else {
      std::fill(trial.begin(), trial.end(), 0.0);
      for (size_t j : kept) trial[j] = 1.0 / double(kept.size() + 1);
      trial[k] = 1.0 / double(kept.size() + 1);
    }
    const SoupScore score = evaluator.score(paths, weighted(trial, mode));
    GreedyStep s{int64_t(k), score.nll < result.nll && score.safe, score.nll, score.safe, trial};
    if (s.accepted) {
      result.weights = trial;
      result.nll = score.nll;
      kept.push_back(k);
    }
    result.steps.push_back(s);
  }
  return result;
}

}  // namespace bd
