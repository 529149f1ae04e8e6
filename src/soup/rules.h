// DeltaSoup's aggregation rules (docs/deltasoup.md defines each with its reference).
//
// Coordinate rules see, for each coordinate, the n contributions' values (and, for the sign
// rules, each contribution's scale: its mean |δ| over the matrix or row). Vector rules see the
// whole deltas only through their Gram matrix G[i][j] = Σ_coordinates δ_i · δ_j, accumulated in
// one streaming pass: squared distances are G_ii + G_jj − 2 G_ij, and the geometric median and
// centered clipping iterate on the weights α of a combination Σ α_k δ_k, whose distances to
// every δ_k the Gram matrix also gives. The second pass then writes Σ α_k δ_k (or, for Bulyan,
// a coordinate rule over the selected contributions).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bd {

enum class SoupMethod {
  mean,
  trimmed_mean,  // --trim β
  median,
  krum,              // --byzantine f
  multi_krum,        // --byzantine f --keep m
  bulyan,            // --byzantine f
  geometric_median,  // smoothed Weiszfeld
  centered_clip,     // --clip-radius τ (default: the median norm), --iterations L
  sign_majority,
  sign_vote,  // --trim β
};

struct SoupParams {
  SoupMethod method = SoupMethod::mean;
  double trim = 0.1;       // β of trimmed-mean and sign-vote
  int64_t byzantine = 0;   // f of Krum, Multi-Krum, Bulyan
  int64_t keep = 0;        // m of Multi-Krum
  double clip_radius = 0;  // τ of centered clipping; 0: the median of the deltas' norms
  int64_t iterations = 0;  // geometric median (default 100) / centered clipping (default 3)
};

SoupMethod parse_soup_method(const std::string& name);  // throws bd::Error listing the names
const char* soup_method_name(SoupMethod method);
bool is_vector_rule(SoupMethod method);  // needs the Gram matrix (first pass)
bool is_sign_rule(SoupMethod method);    // needs each contribution's scales

// Throws bd::Error, one line, when the parameters do not fit n contributions (n > 2f + 2 for
// Krum, n ≥ 4f + 3 for Bulyan, β ∈ [0, 0.5), 1 ≤ m ≤ n − f, ...).
void check_soup_params(const SoupParams& params, int64_t n);

// What a vector rule chose from the Gram matrix.
struct VectorChoice {
  std::vector<double> weights;    // α: the output is Σ α_k δ_k (not for Bulyan)
  std::vector<int64_t> selected;  // contributions with α_k > 0, or Bulyan's selection
  std::vector<double> scores;     // Krum scores (Krum, Multi-Krum, Bulyan's first round)
  int64_t iterations = 0;         // geometric median / centered clipping
};
VectorChoice choose_vectors(const SoupParams& params, const std::vector<double>& gram, int64_t n);

// The median (the mean of the two middle values for an even count). Needs a value.
double median_of(std::vector<double> values);

// A sign rule's scale from the contributions' scales sorted ascending: their median
// (sign-majority) or trimmed mean (sign-vote).
float sign_rule_scale(const SoupParams& params, const float* sorted_scales, int64_t n);

// Krum scores: for each contribution, the sum of its n − f − 2 smallest squared distances to the
// others among `members` (all when empty).
std::vector<double> krum_scores(const std::vector<double>& gram, int64_t n, int64_t f,
                                const std::vector<int64_t>& members);

// One coordinate: `values` holds the n contributions' values (contribution-major with stride
// `stride`: values[k · stride]); `scales` the contributions' scales there, sorted ascending (sign
// rules only: they are the same for a whole row or matrix, so the caller sorts them once).
// `choice`: the vector rule's (weights, or Bulyan's selection). `scratch`: at least n floats.
float aggregate_coordinate(const SoupParams& params, const float* values, int64_t stride, int64_t n,
                           const float* scales, const VectorChoice& choice, float* scratch);

}  // namespace bd
