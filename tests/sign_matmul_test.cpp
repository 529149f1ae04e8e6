// The packed-sign kernels against a float64 reference that reads S from an unpacked ±1 matrix,
// on shapes that hit every path: I not a multiple of 8, 16 or 64 (vector tails, bits from inside
// a byte), O = 1, I = 1, few tokens (masked-add GEMV) and many (widened SGEMM), per-row and
// per-matrix scales.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/error.h"
#include "hwy/targets.h"
#include "kernels/sign_matmul.h"

namespace bd {
namespace {

struct Case {
  int64_t T, O, I;
};

// S[O, I] ∈ {−1, +1} as floats, and the same packed LSB-first with zero padding bits.
struct Signs {
  std::vector<float> dense;
  std::vector<uint8_t> bits;
};

Signs random_signs(int64_t O, int64_t I, std::mt19937& rng) {
  Signs s;
  s.dense.resize(size_t(O * I));
  s.bits.assign(size_t(O * sign_row_bytes(I)), 0);
  for (int64_t o = 0; o < O; ++o) {
    for (int64_t i = 0; i < I; ++i) {
      const bool plus = rng() & 1;
      s.dense[size_t(o * I + i)] = plus ? 1.0f : -1.0f;
      if (plus) s.bits[size_t(o * sign_row_bytes(I) + i / 8)] |= uint8_t(1u << (i % 8));
    }
  }
  return s;
}

std::vector<float> random_values(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> uniform(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = uniform(rng);
  return v;
}

// Σ_i S[o, i]·x[t, i] in float64, and the bound Σ|x| its F32 error scales with.
double ref_dot(const Signs& s, const std::vector<float>& x, int64_t t, int64_t o, int64_t I,
               double* magnitude) {
  double sum = 0, abs_sum = 0;
  for (int64_t i = 0; i < I; ++i) {
    sum += double(s.dense[size_t(o * I + i)]) * x[size_t(t * I + i)];
    abs_sum += std::fabs(x[size_t(t * I + i)]);
  }
  *magnitude = abs_sum;
  return sum;
}

// Runs `body` once per SIMD target that this CPU supports and the kernels were compiled for.
template <typename Body>
void for_each_target(Body body) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    body();
  }
  hwy::SetSupportedTargetsForTest(0);
}

// Error bound for an F32 result of n terms with Σ|term| = magnitude, in any summation order
// (Higham: γ_n·Σ|term|, γ_n = n·u/(1 − n·u), u = 2⁻²⁴), tripled for 2·Σ_{S=+1} x − Σ x (two sums
// and a difference), plus the rounding of a result of size `value`. A dropped, doubled or
// sign-flipped term breaks it by orders of magnitude at these sizes.
double tolerance(double magnitude, int64_t n, double value) {
  const double u = std::ldexp(1.0, -24);
  const double gamma = double(n + 2) * u / (1 - double(n + 2) * u);
  return 3 * gamma * magnitude + 2 * u * std::fabs(value);
}

class SignKernels : public ::testing::TestWithParam<Case> {};

void check_against_float64(int64_t T, int64_t O, int64_t I) {
  std::mt19937 rng(unsigned(T * 10007 + O * 101 + I));
  const Signs s = random_signs(O, I, rng);
  const std::vector<float> x = random_values(size_t(T * I), rng);
  const std::vector<float> dy = random_values(size_t(T * O), rng);
  const std::vector<float> y0 = random_values(size_t(T * O), rng);
  const std::vector<float> dx0 = random_values(size_t(T * I), rng);
  const std::vector<float> row_scale = random_values(size_t(O), rng, 0.001f, 0.05f);
  const float matrix_scale = 0.0123f;

  std::vector<float> sx(size_t(T * O), 7.0f);  // overwritten
  sign_project(sx.data(), x.data(), s.bits.data(), T, O, I);

  for (bool per_row : {false, true}) {
    SCOPED_TRACE(per_row ? "per row" : "per matrix");
    const float* scale = per_row ? row_scale.data() : &matrix_scale;
    auto gamma = [&](int64_t o) { return double(per_row ? row_scale[size_t(o)] : matrix_scale); };

    std::vector<float> y = y0;
    sign_matmul(y.data(), x.data(), s.bits.data(), scale, per_row, T, O, I);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t o = 0; o < O; ++o) {
        double magnitude;
        const double dot = ref_dot(s, x, t, o, I, &magnitude);
        const size_t at = size_t(t * O + o);
        ASSERT_NEAR(sx[at], dot, tolerance(magnitude, I, dot))
            << "sign_project t=" << t << " o=" << o;
        const double expected = y0[at] + gamma(o) * dot;
        ASSERT_NEAR(y[at], expected,
                    tolerance(gamma(o) * magnitude + std::fabs(y0[at]), I, expected))
            << "sign_matmul t=" << t << " o=" << o;
      }
    }

    // dx[t, i] += Σ_o dy[t, o]·γ[o]·S[o, i]
    std::vector<float> dx = dx0;
    sign_matmul_backward_x(dx.data(), dy.data(), s.bits.data(), scale, per_row, T, O, I);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < I; ++i) {
        double sum = 0, magnitude = 0;
        for (int64_t o = 0; o < O; ++o) {
          const double term = double(dy[size_t(t * O + o)]) * gamma(o);
          sum += term * s.dense[size_t(o * I + i)];
          magnitude += std::fabs(term);
        }
        const size_t at = size_t(t * I + i);
        const double expected = dx0[at] + sum;
        ASSERT_NEAR(dx[at], expected, tolerance(magnitude + std::fabs(dx0[at]), O, expected))
            << "sign_matmul_backward_x t=" << t << " i=" << i;
      }
    }
  }
}

TEST_P(SignKernels, MatmulProjectAndBackwardMatchFloat64) {
  const auto [T, O, I] = GetParam();
  for_each_target([&] { check_against_float64(T, O, I); });
}

INSTANTIATE_TEST_SUITE_P(Shapes, SignKernels,
                         ::testing::Values(Case{1, 37, 1000}, Case{2, 37, 1000}, Case{3, 5, 77},
                                           Case{17, 37, 1000}, Case{1, 1, 1}, Case{17, 1, 1},
                                           Case{1, 1, 203}, Case{2, 64, 1}, Case{1, 300, 9},
                                           Case{5, 129, 63}, Case{8, 16, 129}, Case{9, 16, 129},
                                           Case{1, 40, 4096}, Case{64, 70, 130}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return "T" + std::to_string(info.param.T) + "_O" +
                                  std::to_string(info.param.O) + "_I" +
                                  std::to_string(info.param.I);
                         });

// Padding bits of a row's last byte are not weights: setting them changes nothing.
TEST(SignKernels, PaddingBitsAreIgnored) {
  const int64_t O = 3, I = 13;
  std::mt19937 rng(5);
  Signs s = random_signs(O, I, rng);
  const std::vector<float> x = random_values(size_t(2 * I), rng);
  std::vector<float> clean(size_t(2 * O)), dirty(size_t(2 * O));
  sign_project(clean.data(), x.data(), s.bits.data(), 2, O, I);
  for (int64_t o = 0; o < O; ++o) s.bits[size_t(o * 2 + 1)] |= 0xE0;  // bits 13..15
  sign_project(dirty.data(), x.data(), s.bits.data(), 2, O, I);
  EXPECT_EQ(clean, dirty);
}

// Empty products: I = 0 gives zero sums; T = 0 or O = 0 touch nothing.
TEST(SignKernels, EmptyShapes) {
  std::vector<float> sx(6, 5.0f), y(6, 5.0f);
  const float scale = 2.0f;
  const uint8_t none = 0;
  sign_project(sx.data(), nullptr, &none, 2, 3, 0);
  EXPECT_EQ(sx, std::vector<float>(6, 0.0f));
  sign_matmul(y.data(), nullptr, &none, &scale, false, 2, 3, 0);
  EXPECT_EQ(y, std::vector<float>(6, 5.0f));
  sign_matmul(y.data(), nullptr, &none, &scale, false, 0, 3, 4);
  EXPECT_EQ(y, std::vector<float>(6, 5.0f));
}

TEST(SignKernels, RejectsBadArguments) {
  float out = 0, in = 1;
  const uint8_t bits = 1;
  EXPECT_THROW(sign_project(&out, &in, &bits, -1, 1, 1), Error);
  EXPECT_THROW(sign_project(&out, &in, nullptr, 1, 1, 1), Error);
  EXPECT_THROW(sign_matmul(&out, &in, &bits, nullptr, false, 1, 1, 1), Error);
  EXPECT_THROW(sign_matmul_backward_x(&out, &in, &bits, nullptr, false, 1, 1, 1), Error);
}

}  // namespace
}  // namespace bd
