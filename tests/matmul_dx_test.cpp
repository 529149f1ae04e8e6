// bd::matmul_dx (dx = dy · W) against a float64 reference for every weight dtype, odd shapes,
// and a matrix large enough to be widened in several blocks.
#include "kernels/matmul_dx.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"

namespace bd {
namespace {

struct Case {
  DType dtype;
  int64_t T, O, I;
};

class MatmulDx : public ::testing::TestWithParam<Case> {};

TEST_P(MatmulDx, MatchesFloat64) {
  const auto [dtype, T, O, I] = GetParam();
  std::mt19937 rng(unsigned(T * 131 + O * 7 + I));
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> values(size_t(O * I)), dy(size_t(T * O)), start(size_t(T * I));
  for (float& v : values) v = uniform(rng);
  for (float& v : dy) v = uniform(rng);
  for (float& v : start) v = uniform(rng);
  std::vector<uint8_t> bytes(values.size() * dtype_size(dtype));
  from_f32(dtype, values.data(), bytes.data(), values.size());
  to_f32(dtype, bytes.data(), values.data(), values.size());  // the stored values
  const TensorView weight{dtype, {O, I}, bytes.data()};

  std::vector<float> dx(size_t(T * I), 9.0f), dx_acc = start;
  matmul_dx(dx.data(), dy.data(), weight, T);
  matmul_dx(dx_acc.data(), dy.data(), weight, T, /*accumulate=*/true);
  // Higham's bound for O + 1 F32 multiply-adds in any order: γ_n·Σ|terms|.
  const double u = std::ldexp(1.0, -24), n = double(O + 1), gamma = n * u / (1 - n * u);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < I; ++i) {
      double sum = 0, magnitude = 0;
      for (int64_t o = 0; o < O; ++o) {
        const double term = double(dy[size_t(t * O + o)]) * values[size_t(o * I + i)];
        sum += term;
        magnitude += std::fabs(term);
      }
      const size_t at = size_t(t * I + i);
      ASSERT_NEAR(dx[at], sum, gamma * magnitude) << "t=" << t << " i=" << i;
      ASSERT_NEAR(dx_acc[at], start[at] + sum, gamma * (magnitude + std::fabs(start[at])))
          << "accumulate t=" << t << " i=" << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulDx,
                         ::testing::Values(Case{DType::F32, 3, 17, 29},
                                           Case{DType::BF16, 3, 17, 29},
                                           Case{DType::F16, 3, 17, 29}, Case{DType::BF16, 1, 1, 1},
                                           Case{DType::F16, 5, 1, 33}, Case{DType::F32, 2, 40, 1},
                                           // Two widened blocks: 1048 rows · 1000 above the
                                           // threshold for widening on threads (2¹⁶
                                           // elements), then 52 rows below it, as are the
                                           // shapes above.
                                           Case{DType::BF16, 2, 1100, 1000}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(dtype_name(info.param.dtype)) + "_T" +
                                  std::to_string(info.param.T) + "_O" +
                                  std::to_string(info.param.O) + "_I" +
                                  std::to_string(info.param.I);
                         });

TEST(MatmulDx, EmptyAndBadShapes) {
  std::vector<float> dx(6, 3.0f);
  const float none = 0;
  matmul_dx(dx.data(), &none, TensorView{DType::F32, {0, 3}, &none}, 2);  // O = 0: zero sums
  EXPECT_EQ(dx, std::vector<float>(6, 0.0f));
  dx.assign(6, 3.0f);
  matmul_dx(dx.data(), &none, TensorView{DType::F32, {0, 3}, &none}, 2, true);
  EXPECT_EQ(dx, std::vector<float>(6, 3.0f));
  EXPECT_THROW(matmul_dx(dx.data(), &none, TensorView{DType::F32, {3}, &none}, 1), Error);
  EXPECT_THROW(matmul_dx(dx.data(), &none, TensorView{DType::U8, {1, 1}, &none}, 1), Error);
}

}  // namespace
}  // namespace bd
