// Greedy soups: candidates ranked best first by the held-out NLL of the base with each alone,
// then taken one at a time, kept only if the held-out NLL improves and (with suites) every
// safety gate holds:
//   - additive (the proposal's rule): from the base, try adding step × δ_k;
//   - average (Model Soups, Wortsman et al. 2022): try the uniform average of the kept and δ_k.
// The result is the mixing coefficients (Σ w_k δ_k is the soup) and every step's scores.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "soup/soup_quality.h"

namespace bd {

enum class GreedyMode { additive, average };

struct GreedyStep {
  int64_t candidate = 0;  // canonical index
  bool accepted = false;
  double nll = 0;  // of the tried soup
  bool safe = true;
  std::vector<double> weights;  // the tried coefficients
};

struct GreedyResult {
  std::vector<double> weights;  // of the soup kept at the end
  double nll = 0;
  std::vector<double> alone_nll;  // each candidate alone (average) or at step × δ (additive)
  std::vector<GreedyStep> steps;
};

GreedyResult greedy_soup(const std::vector<std::string>& paths, SoupEvaluator& evaluator,
                         GreedyMode mode, double step);

}  // namespace bd
