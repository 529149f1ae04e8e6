// `bitdelta screen`: flags contributions that do not look like the others (poisoning and backdoor
// screening), from three statistics per contribution, each judged by a robust z-score against the
// rest (Iglewicz and Hoaglin's modified z = 0.6745 (x − median) / MAD):
//   - the norm of its delta (far from the others either way: scaled or empty deltas);
//   - its cosine similarity to the coordinate-wise median of all contributions (the robust
//     aggregate; flagged when unusually low);
//   - the fraction of its coordinates whose sign agrees with the coordinate-wise majority sign
//     (flagged when unusually low).
// One streaming pass over the inputs; sums reduced in block order, so the report is the same for
// any thread count.
#pragma once
#include <string>
#include <vector>

#include "soup/soup_inputs.h"

namespace bd {

// |modified z| above this flags (Iglewicz and Hoaglin's recommended cut-off).
inline constexpr double kScreenThreshold = 3.5;

struct ScreenEntry {
  double norm = 0, norm_z = 0;
  double cosine = 0, cosine_z = 0;        // to the coordinate-wise median
  double agreement = 0, agreement_z = 0;  // fraction of coordinates with the majority sign
  std::vector<std::string> reasons;       // empty: not flagged
  bool flagged() const { return !reasons.empty(); }
};

// One entry per contribution, in the inputs' canonical order.
std::vector<ScreenEntry> screen_contributions(const SoupInputs& inputs,
                                              double threshold = kScreenThreshold,
                                              bool quiet = true);

// The modified z-scores of `values` (0 for all when they are all equal; ±inf for a value off a
// MAD of 0).
std::vector<double> robust_z_scores(const std::vector<double>& values);

}  // namespace bd
