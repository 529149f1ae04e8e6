#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace bd {

int32_t argmax(const float* logits, int64_t vocab) {
  return int32_t(std::max_element(logits, logits + vocab) - logits);
}

Sampler::Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) {
  if (!(options.temperature >= 0) || !std::isfinite(options.temperature))
    fail("sampler: temperature must be a finite number >= 0, got ", options.temperature);
  if (options.top_k < 0) fail("sampler: top_k must be >= 0, got ", options.top_k);
  if (!(options.top_p > 0 && options.top_p <= 1))
    fail("sampler: top_p must be in (0, 1], got ", options.top_p);
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  if (vocab <= 0) fail("sampler: empty vocabulary");
  if (options_.temperature == 0) return argmax(logits, vocab);

  candidates_.resize(size_t(vocab));
  std::iota(candidates_.begin(), candidates_.end(), 0);
  auto more_likely = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int64_t kept = vocab;
  if (options_.top_k > 0 && options_.top_k < vocab) {
    kept = options_.top_k;
    std::partial_sort(candidates_.begin(), candidates_.begin() + kept, candidates_.end(),
                      more_likely);
  } else if (options_.top_p < 1) {
    std::sort(candidates_.begin(), candidates_.end(), more_likely);
  }

  // exp((logit - max) / T) over the kept candidates.
  float max_logit = logits[candidates_[0]];
  for (int64_t i = 1; i < kept; ++i) max_logit = std::max(max_logit, logits[candidates_[i]]);
  weights_.resize(size_t(kept));
  double total = 0;
  for (int64_t i = 0; i < kept; ++i) {
    weights_[i] = std::exp(double(logits[candidates_[i]] - max_logit) / options_.temperature);
    total += weights_[i];
  }
  if (options_.top_p < 1) {  // candidates are sorted here: keep the shortest prefix reaching p
    double cumulative = 0;
    int64_t nucleus = 0;
    while (nucleus < kept && cumulative < options_.top_p * total) cumulative += weights_[nucleus++];
    kept = nucleus;  // >= 1: the first weight is exp(0) = 1
    total = cumulative;
  }

  const double u = double(rng_() >> 11) * 0x1.0p-53 * total;  // uniform in [0, total)
  double cumulative = 0;
  for (int64_t i = 0; i < kept; ++i) {
    cumulative += weights_[i];
    if (u < cumulative) return candidates_[i];
  }
  return candidates_[kept - 1];  // u landed in the rounding gap at the very top
}

}  // namespace bd
