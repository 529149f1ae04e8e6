// The bit-sliced order statistics (kernels/sign_rank.h) against sorting the dequantised values,
// on every SIMD target compiled: the median exactly (it picks a value), the trimmed mean to one
// float rounding (the kernel sums every value and subtracts the dropped ones, by groups of 8
// contributions, the reference the kept ones in ascending order, both in double), disagreements
// and packing exactly.
#include "kernels/sign_rank.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "simd_targets.h"

namespace bd {
namespace {

// n random sign rows of `cols` bits (padding bits 0), scales sorted decreasing with some ties.
struct Contributions {
  int64_t n, cols, row_bytes;
  std::vector<std::vector<uint8_t>> rows;
  std::vector<const uint8_t*> bits;
  std::vector<float> gammas;

  Contributions(int64_t n_, int64_t cols_, uint64_t seed)
      : n(n_), cols(cols_), row_bytes((cols_ + 7) / 8) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> uniform(0.5f, 2.0f);
    for (int64_t k = 0; k < n; ++k) {
      std::vector<uint8_t>& row = rows.emplace_back(size_t(row_bytes), 0);
      const double p = 0.1 + 0.8 * double(k % 7) / 6;  // some contributions mostly +, some mostly −
      for (int64_t j = 0; j < cols; ++j)
        if (std::bernoulli_distribution(p)(rng)) row[size_t(j / 8)] |= uint8_t(1u << (j % 8));
      gammas.push_back(k % 5 == 4 ? gammas.back() : uniform(rng));  // every fifth ties
    }
    std::sort(gammas.begin(), gammas.end(), std::greater<float>());
    for (const auto& row : rows) bits.push_back(row.data());
  }
  SignRankRows view() const { return {bits.data(), gammas.data(), n, cols}; }
  float value(int64_t k, int64_t j) const {
    return (rows[size_t(k)][size_t(j / 8)] >> (j % 8)) & 1 ? gammas[size_t(k)] : -gammas[size_t(k)];
  }
  std::vector<float> sorted(int64_t j) const {
    std::vector<float> v;
    for (int64_t k = 0; k < n; ++k) v.push_back(value(k, j));
    std::sort(v.begin(), v.end());
    return v;
  }
};

struct Shape {
  int64_t n, cols;
};
const Shape kShapes[] = {{1, 70},   {2, 64},    {3, 1},    {7, 129},    {15, 600},
                         {16, 65},  {40, 513},  {99, 200}, {100, 1030}, {127, 300},
                         {128, 90}, {256, 130}, {301, 67}};

TEST(SignRank, MedianIsTheMiddleOfTheSortedValues) {
  for (const Shape& shape : kShapes) {
    SCOPED_TRACE(testing::Message() << "n " << shape.n << " cols " << shape.cols);
    const Contributions c(shape.n, shape.cols, uint64_t(shape.n * 1000 + shape.cols));
    test::for_each_target([&] {
      std::vector<float> out(size_t(shape.cols), NAN);
      sign_rank_median(c.view(), out.data());
      for (int64_t j = 0; j < shape.cols; ++j) {
        const std::vector<float> v = c.sorted(j);
        const size_t n = v.size();
        const float expected =
            n % 2 ? v[n / 2] : float((double(v[n / 2 - 1]) + double(v[n / 2])) / 2);
        ASSERT_EQ(out[size_t(j)], expected) << "coordinate " << j;
      }
    });
  }
}

TEST(SignRank, TrimmedMeanAveragesTheMiddleValues) {
  for (const Shape& shape : kShapes) {
    for (int64_t cut : {int64_t(0), int64_t(1), shape.n / 4, (shape.n - 1) / 2}) {
      if (2 * cut >= shape.n) continue;
      SCOPED_TRACE(testing::Message()
                   << "n " << shape.n << " cols " << shape.cols << " cut " << cut);
      const Contributions c(shape.n, shape.cols, uint64_t(shape.n * 7 + shape.cols));
      test::for_each_target([&] {
        std::vector<float> out(size_t(shape.cols), NAN);
        sign_rank_trimmed_mean(c.view(), cut, out.data());
        for (int64_t j = 0; j < shape.cols; ++j) {
          const std::vector<float> v = c.sorted(j);
          double sum = 0;
          for (int64_t i = cut; i < shape.n - cut; ++i) sum += v[size_t(i)];
          const double expected = sum / double(shape.n - 2 * cut);
          // Both sums are exact to ~1e-16 of 2 · n; the float results differ by at most one
          // rounding.
          ASSERT_NEAR(out[size_t(j)], expected, 1.2e-7 * std::max(1.0, std::abs(expected)))
              << "coordinate " << j;
        }
      });
    }
  }
}

TEST(SignRank, WeightedSumAddsSignedWeights) {
  const Contributions c(13, 700, 3);
  std::vector<double> weights;
  for (int64_t k = 0; k < 13; ++k) weights.push_back(0.37 * double(k + 1) * (k % 3 ? 1 : -0.5));
  test::for_each_target([&] {
    std::vector<float> out(700, NAN);
    sign_rank_weighted_sum(c.view(), weights.data(), out.data());
    for (int64_t j = 0; j < 700; ++j) {
      double sum = 0;
      for (int64_t k = 0; k < 13; ++k)
        sum += c.value(k, j) > 0 ? weights[size_t(k)] : -weights[size_t(k)];
      ASSERT_NEAR(out[size_t(j)], sum, 1.2e-7 * std::max(1.0, std::abs(sum))) << j;
    }
  });
}

TEST(SignRank, CountValuesLooksUpTheNumberOfPositives) {
  for (const Shape& shape : kShapes) {
    SCOPED_TRACE(testing::Message() << "n " << shape.n << " cols " << shape.cols);
    const Contributions c(shape.n, shape.cols, uint64_t(shape.n + 3 * shape.cols));
    std::vector<float> value_of;
    for (int64_t p = 0; p <= shape.n; ++p) value_of.push_back(0.5f * float(p) - 7.0f);
    test::for_each_target([&] {
      std::vector<float> out(size_t(shape.cols), NAN);
      sign_rank_count_values(c.view(), value_of.data(), out.data());
      for (int64_t j = 0; j < shape.cols; ++j) {
        int64_t positive = 0;
        for (int64_t k = 0; k < shape.n; ++k) positive += c.value(k, j) > 0;
        ASSERT_EQ(out[size_t(j)], value_of[size_t(positive)]) << "coordinate " << j;
      }
    });
  }
}

TEST(SignRank, DisagreementsCountDifferingSigns) {
  const Contributions c(9, 1000, 5);
  test::for_each_target([&] {
    std::vector<int64_t> d(81, 7);  // added to
    sign_rank_disagreements(c.view(), d.data());
    for (int64_t a = 0; a < 9; ++a)
      for (int64_t b = 0; b < 9; ++b) {
        int64_t expected = 7;
        for (int64_t j = 0; j < 1000 && a < b; ++j) expected += c.value(a, j) * c.value(b, j) < 0;
        EXPECT_EQ(d[size_t(a * 9 + b)], expected) << a << " " << b;
      }
  });
}

TEST(SignRank, PackSetsTheNonNegativeAndSumsMagnitudes) {
  test::for_each_target([&] {
    for (int64_t cols : {1, 15, 16, 17, 100}) {
      std::vector<float> values;
      double expected_sum = 0;
      for (int64_t j = 0; j < cols; ++j) {
        values.push_back(j % 3 == 0 ? -0.25f * float(j) : 0.5f * float(j % 5));  // includes 0
        expected_sum += std::abs(double(values.back()));
      }
      std::vector<uint8_t> bits(size_t((cols + 7) / 8), 0);
      EXPECT_DOUBLE_EQ(sign_rank_pack(values.data(), cols, bits.data()), expected_sum);
      for (int64_t j = 0; j < cols; ++j)
        EXPECT_EQ((bits[size_t(j / 8)] >> (j % 8)) & 1, values[size_t(j)] >= 0) << j;
    }
  });
}

// Rows laid out for the kernels (SignRankRows::padded) are read in place and give the same
// results as rows the kernels copy.
TEST(SignRank, PaddedRowsGiveTheSameResults) {
  for (const Shape& shape : kShapes) {
    SCOPED_TRACE(testing::Message() << "n " << shape.n << " cols " << shape.cols);
    const Contributions c(shape.n, shape.cols, uint64_t(shape.n * 31 + shape.cols));
    const int64_t stride = sign_rank_padded_stride(c.row_bytes);
    ASSERT_EQ(stride % 64, 0);
    ASSERT_NE(stride % 4096, 0);
    ASSERT_GE(stride, c.row_bytes);
    std::vector<uint64_t> storage(size_t(shape.n * stride / 8 + 8), 0);
    uint8_t* base = reinterpret_cast<uint8_t*>(storage.data());
    base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
    std::vector<const uint8_t*> padded_bits;
    for (int64_t k = 0; k < shape.n; ++k) {
      std::copy(c.rows[size_t(k)].begin(), c.rows[size_t(k)].end(), base + k * stride);
      padded_bits.push_back(base + k * stride);
    }
    SignRankRows padded = c.view();
    padded.bits = padded_bits.data();
    padded.padded = true;
    std::vector<double> weights(c.gammas.begin(), c.gammas.end());
    std::vector<float> value_of(size_t(shape.n + 1));
    for (int64_t p = 0; p <= shape.n; ++p) value_of[size_t(p)] = float(p);
    auto results = [&](const SignRankRows& view) {
      std::vector<std::vector<float>> out(4, std::vector<float>(size_t(shape.cols), NAN));
      sign_rank_median(view, out[0].data());
      sign_rank_trimmed_mean(view, (shape.n - 1) / 4, out[1].data());
      sign_rank_weighted_sum(view, weights.data(), out[2].data());
      sign_rank_count_values(view, value_of.data(), out[3].data());
      return out;
    };
    test::for_each_target([&] { EXPECT_EQ(results(padded), results(c.view())); });
  }
  // A padded row must start on a 64-byte boundary (8 bytes past a 16-byte aligned address never
  // does).
  const Contributions c(3, 100, 1);
  std::vector<uint64_t> storage(64);
  const uint8_t* const misaligned = reinterpret_cast<const uint8_t*>(storage.data() + 1);
  const uint8_t* rows[3] = {misaligned, misaligned, misaligned};
  SignRankRows view = c.view();
  view.bits = rows;
  view.padded = true;
  std::vector<float> out(100);
  EXPECT_THROW(sign_rank_median(view, out.data()), std::exception);
}

// Sums whose partial sums round (scales 5 to 22 binary orders of magnitude apart, weights 15)
// come out bit-identical on every target: the AVX-512 masked adds and the other targets' table
// lookups perform the same additions in the same order.
TEST(SignRank, SumsRoundAlikeOnEveryTarget) {
  for (const Shape& shape : {Shape{37, 1030}, Shape{100, 700}, Shape{9, 200}}) {
    SCOPED_TRACE(testing::Message() << "n " << shape.n << " cols " << shape.cols);
    Contributions c(shape.n, shape.cols, uint64_t(shape.n * 5 + shape.cols));
    for (int64_t k = 0; k < shape.n; ++k)
      c.gammas[size_t(k)] = std::ldexp(1.0f + float(k % 7) / 7.0f, int(100 - k * 200 / shape.n));
    std::vector<double> weights;
    for (int64_t k = 0; k < shape.n; ++k)
      weights.push_back(std::ldexp(k % 3 ? 1.0 / 3 : -1.0, int(k % 8 * 15 - 50)));
    std::vector<std::vector<float>> first;
    test::for_each_target([&] {
      std::vector<std::vector<float>> out;
      for (int64_t cut : {int64_t(0), int64_t(1), shape.n / 5, (shape.n - 1) / 2}) {
        out.emplace_back(size_t(shape.cols), NAN);
        sign_rank_trimmed_mean(c.view(), cut, out.back().data());
      }
      out.emplace_back(size_t(shape.cols), NAN);
      sign_rank_weighted_sum(c.view(), weights.data(), out.back().data());
      if (first.empty()) first = out;
      for (size_t r = 0; r < out.size(); ++r)
        for (int64_t j = 0; j < shape.cols; ++j)
          ASSERT_EQ(out[r][size_t(j)], first[r][size_t(j)])
              << "result " << r << ", coordinate " << j;
    });
  }
}

TEST(SignRank, BadSizesAreRefused) {
  const Contributions c(4, 10, 1);
  std::vector<float> out(10);
  EXPECT_THROW(sign_rank_trimmed_mean(c.view(), 2, out.data()), std::exception);
  SignRankRows none = c.view();
  none.n = 0;
  EXPECT_THROW(sign_rank_median(none, out.data()), std::exception);
}

}  // namespace
}  // namespace bd
