#include "soup/signed_row.h"

#include <algorithm>
#include <numeric>

namespace bd {

SignedRow::SignedRow(const std::vector<const uint8_t*>& bits, const std::vector<float>& gammas)
    : n_(int64_t(bits.size())) {
  std::vector<size_t> order(bits.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return gammas[a] < gammas[b]; });
  for (size_t k : order) {
    bits_.push_back(bits[k]);
    gamma_.push_back(gammas[k]);
  }
}

template <typename Visit>
void SignedRow::ascending(int64_t j, int64_t first, int64_t last, Visit visit) const {
  int64_t rank = 0;
  for (int64_t i = n_ - 1; i >= 0 && rank < last; --i)  // negatives, most negative first
    if (!positive(i, j)) {
      if (rank >= first) visit(-gamma_[size_t(i)]);
      ++rank;
    }
  for (int64_t i = 0; i < n_ && rank < last; ++i)  // then positives, smallest first
    if (positive(i, j)) {
      if (rank >= first) visit(gamma_[size_t(i)]);
      ++rank;
    }
}

float SignedRow::median(int64_t j) const {
  float middle[2] = {0, 0};
  int found = 0;
  ascending(j, (n_ - 1) / 2, n_ / 2 + 1, [&](float v) { middle[found++] = v; });
  return n_ % 2 ? middle[0] : float((double(middle[0]) + double(middle[1])) / 2);
}

float SignedRow::trimmed_mean(int64_t j, int64_t cut) const {
  double sum = 0;
  ascending(j, cut, n_ - cut, [&](float v) { sum += v; });
  return float(sum / double(n_ - 2 * cut));
}

}  // namespace bd
