// Order statistics straight from packed signs: when every contribution holds a weight as signs
// and a scale, its value at a coordinate is ±γ_k, so sorting the n values of a coordinate is not
// needed. Sort the contributions by γ once per row; then the values in ascending order are the
// negative ones by decreasing γ followed by the positive ones by increasing γ, and the median or
// the trimmed mean of a coordinate is a walk over the sign bits (no dequantised block, no sort).
// The results are the same floating-point numbers, summed in the same ascending order, as
// sorting the dequantised values (soup/rules.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace bd {

class SignedRow {
 public:
  // bits[k]: contribution k's packed sign row (bit j of byte j/8, least significant first;
  // set = +γ); gammas[k]: its scale for this row. Both of length n ≥ 1.
  SignedRow(const std::vector<const uint8_t*>& bits, const std::vector<float>& gammas);

  float median(int64_t j) const;
  // The mean of the values left after dropping the `cut` smallest and `cut` largest.
  float trimmed_mean(int64_t j, int64_t cut) const;

 private:
  bool positive(int64_t i, int64_t j) const { return (bits_[size_t(i)][j >> 3] >> (j & 7)) & 1; }
  // Calls visit(value) for the values of coordinate j in ascending order, ranks [first, last).
  template <typename Visit>
  void ascending(int64_t j, int64_t first, int64_t last, Visit visit) const;

  int64_t n_;
  std::vector<const uint8_t*> bits_;  // by increasing γ
  std::vector<float> gamma_;
};

}  // namespace bd
