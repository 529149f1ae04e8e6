// Order statistics over n contributions' packed sign rows: DeltaSoup's kernels (soup/).
//
// Contribution k's value at coordinate j is +γ_k where bit j of its sign row is set, else −γ_k
// (the sign_matmul.h bit layout). With the contributions sorted by decreasing γ, a coordinate's
// values in ascending order are its negative ones in contribution order followed by its positive
// ones in reverse contribution order; so the rank of a value is a count of signs seen so far.
// The kernels keep those counts bit-sliced (one 64-bit plane per counter bit, 64 coordinates
// per word, a SIMD vector of words at a time) and never form a value per contribution and
// coordinate: the median is an index found by counting, and the trimmed mean adds up every γ
// under its sign and subtracts those of the dropped values, found by counters that stop as soon
// as every coordinate of a vector has dropped its share (AVX-512: a masked add per 8
// coordinates and contribution; other targets: a table lookup per 8 contributions).
#pragma once
#include <cstdint>

namespace bd {

// The most contributions the kernels take (their counters and indices are 16-bit at most).
inline constexpr int64_t kSignRankMaxContributions = 65535;

struct SignRankRows {
  const uint8_t* const* bits = nullptr;  // [n] sign rows of `cols` bits, by decreasing γ
  const float* gammas = nullptr;         // [n], decreasing (ties in any order)
  int64_t n = 0, cols = 0;
  // Whether every row starts on a 64-byte boundary and may be read up to the next multiple of 64
  // bytes past its last, with zero bits past `cols` (a block laid out with
  // sign_rank_padded_stride): then the kernels read the rows in place instead of copying them.
  bool padded = false;
};

// Bytes from one row to the next for rows of `row_bytes` that the kernels read in place: whole
// 64-byte lines, and one more line when that would be a multiple of 4 KiB (the kernels load the
// same offset of every row in turn, and addresses 4 KiB apart all fall into one L1 set).
int64_t sign_rank_padded_stride(int64_t row_bytes);

// out[j] = the median of the n values at coordinate j (the mean of the two middle ones, in
// double, when n is even): exactly the value a sort of the dequantised values would give.
void sign_rank_median(const SignRankRows& rows, float* out);

// out[j] = the mean of the values left after dropping the `cut` smallest and `cut` largest
// (0 ≤ 2·cut < n; cut = 0 is the mean), in double: the sum of all n values less the sum of the
// dropped ones (the first `cut` of each sign in contribution order, and where a sign has fewer,
// the other's last ones), each summed by groups of 8 contributions (a group's ±γ added from its
// last contribution to its first, the groups in order). The sums do not depend on the SIMD
// target or the thread.
void sign_rank_trimmed_mean(const SignRankRows& rows, int64_t cut, float* out);

// out[j] = Σ_i weights[i] · s_ij (s = ±1 from the bits; `gammas` is not read, the rows need no
// order), as 2 Σ_i weights[i] · b_ij − Σ_i weights[i] with b_ij ∈ {0, 1} summed as
// sign_rank_trimmed_mean sums: a combination Σ_k α_k δ_k of sign deltas with weights α_k γ_k.
void sign_rank_weighted_sum(const SignRankRows& rows, const double* weights, float* out);

// out[j] = value_of[p_j], p_j the number of contributions whose bit j is set (0 ≤ p_j ≤ n;
// value_of has n + 1 entries; `gammas` is not read): the sign rules, which depend on a
// coordinate's signs only through how many are positive.
void sign_rank_count_values(const SignRankRows& rows, const float* value_of, float* out);

// d[i · n + j] += the number of coordinates where rows i and j differ, for every i < j. The
// squared distance of two sign deltas, and their Gram entry, follow exactly from it.
void sign_rank_disagreements(const SignRankRows& rows, int64_t* d);

// bits (a zeroed row of (cols + 7) / 8 bytes) gets bit j set where values[j] ≥ 0; returns
// Σ_j |values[j]| in double: a re-quantised aggregate's signs and the sum for its scale.
double sign_rank_pack(const float* values, int64_t cols, uint8_t* bits);

}  // namespace bd
