// The packed-sign kernels against a float64 reference that reads S from an unpacked ±1 matrix,
// on shapes that hit every path: I not a multiple of 8, 16 or 64 (vector tails, bits from inside
// a byte), O = 1, I = 1, few tokens (quantized integer GEMV) and many (widened SGEMM), per-row and
// per-matrix scales, and matrices on either side of the kernels' threshold for threads.
//
// The bounds are tight enough that one flipped sign fails: the inputs are bounded away from zero
// (so every sign moves its outputs by a visible amount) and lie on a grid on which F32 sums are
// exact, so only the scaling and the SGEMM's products round. Every check asserts that the
// smallest change a single flipped sign can make is above its bound, and OneFlippedSignFails
// shows it on the least visible sign of a matrix.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "hwy/aligned_allocator.h"
#include "kernels/matmul.h"
#include "kernels/parallel.h"
#include "kernels/sign_matmul.h"
#include "simd_targets.h"
#include "test_util.h"

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

// ±m·2⁻¹² with m in [2¹¹, 2¹²): magnitudes in [0.5, 1), 12 significant bits (more than BF16 or
// F16 hold, so a kernel that rounds its input is caught). Any sum of up to 4096 of them is a
// multiple of 2⁻¹² below 2¹², exact in F32 whatever the order: S·x is exact on the SGEMM path.
constexpr int64_t kMaxExactI = 4096;
std::vector<float> grid_values(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> mantissa(2048, 4095);
  std::vector<float> v(n);
  for (float& x : v) x = std::ldexp(float(mantissa(rng)), -12) * ((rng() & 1) ? 1.0f : -1.0f);
  return v;
}

// One shape's inputs: x and dy on the exact grid, y0, dx0 and the scales anywhere.
struct Problem {
  int64_t T = 0, O = 0, I = 0;
  Signs s;
  std::vector<float> x, dy, y0, dx0, row_scale;
  float matrix_scale = 0.0123f;
};

Problem make_problem(const Case& c) {
  std::mt19937 rng(unsigned(c.T * 10007 + c.O * 101 + c.I));
  Problem p;
  p.T = c.T, p.O = c.O, p.I = c.I;
  p.s = random_signs(c.O, c.I, rng);
  p.x = grid_values(size_t(c.T * c.I), rng);
  p.dy = grid_values(size_t(c.T * c.O), rng);
  p.y0 = random_values(size_t(c.T * c.O), rng);
  p.dx0 = random_values(size_t(c.T * c.I), rng);
  p.row_scale = random_values(size_t(c.O), rng, 0.001f, 0.05f);
  return p;
}

// The kernels' outputs on a problem, and the float64 reference with each element's bound.
struct Outputs {
  std::vector<float> sx, y, dx;
};
struct Reference {
  std::vector<double> sx, y, dx;
  std::vector<double> sx_bound, y_bound, dx_bound;
  // Over every output: (smallest change one flipped sign of S makes to it) / (its bound).
  double flip_margin = HUGE_VAL;
};

Outputs run_kernels(const Problem& p, const std::vector<uint8_t>& bits, bool per_row) {
  const float* scale = per_row ? p.row_scale.data() : &p.matrix_scale;
  Outputs out;
  out.sx.assign(size_t(p.T * p.O), 7.0f);  // overwritten
  sign_project(out.sx.data(), p.x.data(), bits.data(), p.T, p.O, p.I);
  out.y = p.y0;
  sign_matmul(out.y.data(), p.x.data(), bits.data(), scale, per_row, p.T, p.O, p.I);
  out.dx = p.dx0;
  sign_matmul_backward_x(out.dx.data(), p.dy.data(), bits.data(), scale, per_row, p.T, p.O, p.I);
  return out;
}

// Higham's γ_n = n·u / (1 − n·u), u = 2⁻²⁴: a sum of n products, each rounded and added in any
// order, is within γ_n·Σ|products| of the exact sum.
double higham_gamma(int64_t n) {
  const double u = std::ldexp(1.0, -24);
  return double(n) * u / (1 - double(n) * u);
}

// The reference reads S from `dense` (the problem's, or a copy with a flipped sign). Bounds, per
// output:
//   sx = S·x with few tokens: x is quantized to q·step, step = max|x| / kSignQuantMax, each element
//     within 0.504·step (rounding to nearest, plus the rounding of step and its inverse), and
//     S·q is exact: I·0.504·step, plus 2u·|S·x| for the final conversions. Many tokens (SGEMM
//     on ±1 for sign_project): exact (grid inputs, products by ±1): bound 0.
//   y = y0 + γ·(S·x) with few tokens: γ times sx's bound, then one product and one sum round:
//     + 3u·(|γ·S·x| + |y0|).
//   y with many tokens, and dx = dx0 + Σ_o dy·γ·S (always SGEMM): the SGEMM multiplies by ±γ,
//     so every product rounds: γ_{n+1}·(Σ|terms| + |start|).
Reference reference(const Problem& p, const std::vector<float>& dense, bool per_row) {
  const int64_t T = p.T, O = p.O, I = p.I;
  const double u = std::ldexp(1.0, -24);
  auto gamma = [&](int64_t o) { return double(per_row ? p.row_scale[size_t(o)] : p.matrix_scale); };
  Reference r;
  r.sx.resize(size_t(T * O));
  r.y = r.sx;
  r.sx_bound = r.sx;
  r.y_bound = r.sx;
  r.dx.resize(size_t(T * I));
  r.dx_bound = r.dx;
  for (int64_t t = 0; t < T; ++t) {
    double min_x = HUGE_VAL, abs_x = 0, max_x = 0;
    for (int64_t i = 0; i < I; ++i) {
      min_x = std::min(min_x, double(std::fabs(p.x[size_t(t * I + i)])));
      max_x = std::max(max_x, double(std::fabs(p.x[size_t(t * I + i)])));
      abs_x += std::fabs(p.x[size_t(t * I + i)]);
    }
    const bool few = T <= kSignGemvMaxTokens;
    const double quantization = few ? double(I) * 0.504 * max_x / kSignQuantMax : 0;
    for (int64_t o = 0; o < O; ++o) {
      double dot = 0;
      for (int64_t i = 0; i < I; ++i)
        dot += double(dense[size_t(o * I + i)]) * p.x[size_t(t * I + i)];
      const size_t at = size_t(t * O + o);
      const double y0 = p.y0[at], scaled = gamma(o) * dot;
      r.sx[at] = dot;
      r.sx_bound[at] = few ? quantization + 2 * u * std::fabs(dot) : 0;
      r.y[at] = y0 + scaled;
      r.y_bound[at] = few ? gamma(o) * r.sx_bound[at] + 3 * u * (std::fabs(scaled) + std::fabs(y0))
                          : higham_gamma(I + 1) * (gamma(o) * abs_x + std::fabs(y0));
      r.flip_margin = std::min(r.flip_margin, 2 * gamma(o) * min_x / r.y_bound[at]);
      if (few) r.flip_margin = std::min(r.flip_margin, 2 * min_x / r.sx_bound[at]);
    }
    for (int64_t i = 0; i < I; ++i) {
      double sum = 0, magnitude = 0, min_term = HUGE_VAL;
      for (int64_t o = 0; o < O; ++o) {
        const double term = double(p.dy[size_t(t * O + o)]) * gamma(o);
        sum += term * dense[size_t(o * I + i)];
        magnitude += std::fabs(term);
        min_term = std::min(min_term, std::fabs(term));
      }
      const size_t at = size_t(t * I + i);
      r.dx[at] = p.dx0[at] + sum;
      r.dx_bound[at] = higham_gamma(O + 1) * (magnitude + std::fabs(p.dx0[at]));
      r.flip_margin = std::min(r.flip_margin, 2 * min_term / r.dx_bound[at]);
    }
  }
  return r;
}

// The worst error / bound ratio of each kernel (at most 1: within every bound).
struct Ratios {
  test::ElementwiseError project, matmul, backward;
};

Ratios compare(const Outputs& out, const Reference& r) {
  auto bound = [](const std::vector<double>& b) {
    return [&b](int64_t i) { return b[size_t(i)]; };
  };
  return {
      test::elementwise_error(out.sx.data(), r.sx.data(), int64_t(r.sx.size()), bound(r.sx_bound)),
      test::elementwise_error(out.y.data(), r.y.data(), int64_t(r.y.size()), bound(r.y_bound)),
      test::elementwise_error(out.dx.data(), r.dx.data(), int64_t(r.dx.size()), bound(r.dx_bound))};
}

class SignKernels : public ::testing::TestWithParam<Case> {};

TEST_P(SignKernels, MatmulProjectAndBackwardMatchFloat64) {
  const Problem p = make_problem(GetParam());
  ASSERT_LE(p.I, kMaxExactI);  // beyond it the grid sums round and the bounds above do not hold
  for (bool per_row : {false, true}) {
    SCOPED_TRACE(per_row ? "per row" : "per matrix");
    const Reference r = reference(p, p.s.dense, per_row);
    // A single flipped sign anywhere moves some output past its bound.
    EXPECT_GT(r.flip_margin, 1.0);
    test::for_each_target([&] {
      const Outputs out = run_kernels(p, p.s.bits, per_row);
      auto within = [](const std::vector<float>& got, const std::vector<double>& want,
                       const std::vector<double>& b) {
        return test::all_within(got.data(), want.data(), int64_t(want.size()),
                                [&b](int64_t i) { return b[size_t(i)]; });
      };
      EXPECT_TRUE(within(out.sx, r.sx, r.sx_bound)) << "sign_project";
      EXPECT_TRUE(within(out.y, r.y, r.y_bound)) << "sign_matmul";
      EXPECT_TRUE(within(out.dx, r.dx, r.dx_bound)) << "sign_matmul_backward_x";
    });
  }
}

// The kernels' own threshold for threads (kernels/parallel.h): the GEMV splits rows across
// threads when O·I reaches it, the SGEMM paths widen blocks of rows·I elements in parallel when
// those reach it (rows = O here: every block fits in one).
constexpr int64_t kSignParallelElements = kMinParallelElements;

INSTANTIATE_TEST_SUITE_P(
    Shapes, SignKernels,
    ::testing::Values(Case{1, 37, 1000}, Case{2, 37, 1000}, Case{3, 5, 77}, Case{17, 37, 1000},
                      Case{1, 1, 1}, Case{17, 1, 1}, Case{1, 1, 203}, Case{2, 64, 1},
                      Case{1, 300, 9}, Case{5, 129, 63}, Case{8, 16, 129}, Case{9, 16, 129},
                      Case{64, 70, 130},
                      // O·I above kSignParallelElements: the threaded GEMV, and widening in
                      // parallel for the backward (T = 1) and for the forward SGEMM (T = 12).
                      Case{1, 40, 4096}, Case{5, 67, 1001}, Case{12, 70, 1000}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return "T" + std::to_string(info.param.T) + "_O" + std::to_string(info.param.O) + "_I" +
             std::to_string(info.param.I);
    });

// Both sides of the thresholds are among the shapes above.
static_assert(40 * 4096 >= kSignParallelElements && 67 * 1001 >= kSignParallelElements &&
              70 * 1000 >= kSignParallelElements && 37 * 1000 < kSignParallelElements);
static_assert(5 <= kSignGemvMaxTokens && 12 > kSignGemvMaxTokens);

// The check above fails on one flipped sign: flipping the least visible sign of a matrix (in the
// row with the smallest scale, the column where x is smallest) either in the reference's S or in
// the kernels' bits puts each kernel's worst error above its bound, on both paths (GEMV for
// T = 2, SGEMM for T = 17).
TEST(SignKernels, OneFlippedSignFails) {
  for (const Case c : {Case{2, 37, 1000}, Case{17, 37, 1000}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << c.T);
    const Problem p = make_problem(c);
    const int64_t o =
        std::min_element(p.row_scale.begin(), p.row_scale.end()) - p.row_scale.begin();
    int64_t i = 0;
    double smallest = HUGE_VAL;
    for (int64_t j = 0; j < p.I; ++j) {
      double largest = 0;  // over tokens: the flip shows where |x| is largest
      for (int64_t t = 0; t < p.T; ++t)
        largest = std::max(largest, double(std::fabs(p.x[size_t(t * p.I + j)])));
      if (largest < smallest) smallest = largest, i = j;
    }
    const Reference clean = reference(p, p.s.dense, /*per_row=*/true);
    const Ratios good = compare(run_kernels(p, p.s.bits, true), clean);

    std::vector<float> flipped_dense = p.s.dense;
    flipped_dense[size_t(o * p.I + i)] *= -1.0f;
    const Ratios wrong_reference =
        compare(run_kernels(p, p.s.bits, true), reference(p, flipped_dense, true));
    std::vector<uint8_t> flipped_bits = p.s.bits;
    flipped_bits[size_t(o * sign_row_bytes(p.I) + i / 8)] ^= uint8_t(1u << (i % 8));
    const Ratios wrong_kernel = compare(run_kernels(p, flipped_bits, true), clean);

    auto show = [&](const char* kernel, const test::ElementwiseError& good_e,
                    const test::ElementwiseError& flip_ref,
                    const test::ElementwiseError& flip_bits) {
      std::printf(
          "T=%lld S[%lld, %lld] (scale %.3g, |x| <= %.3g) %-22s worst |error| / bound: clean "
          "%.3g (%.3g / %.3g), flipped in the reference %.3g (%.3g / %.3g), in the kernel's bits "
          "%.3g\n",
          (long long)c.T, (long long)o, (long long)i, p.row_scale[size_t(o)], smallest, kernel,
          good_e.worst, good_e.worst_difference, good_e.worst_bound, flip_ref.worst,
          flip_ref.worst_difference, flip_ref.worst_bound, flip_bits.worst);
      EXPECT_LE(good_e.worst, 1.0) << kernel;
      EXPECT_GT(flip_ref.worst, 1.0) << kernel;
      EXPECT_GT(flip_bits.worst, 1.0) << kernel;
    };
    show("sign_project", good.project, wrong_reference.project, wrong_kernel.project);
    show("sign_matmul", good.matmul, wrong_reference.matmul, wrong_kernel.matmul);
    show("sign_matmul_backward_x", good.backward, wrong_reference.backward, wrong_kernel.backward);
  }
}

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
  const SignSegment negative{-1, 1, &bits, &in, false}, unscaled{0, 1, &bits, nullptr, false};
  EXPECT_THROW(sign_matmul_segments(&out, &in, {&negative, 1}, 1, 1), Error);
  EXPECT_THROW(sign_matmul_segments(&out, &in, {&unscaled, 1}, 1, 1), Error);
  EXPECT_THROW(sign_matmul(&out, &in, &bits, &in, false, 1, 1, kMaxSignColumns + 1), Error);
}

// x is quantized the same way on every target: rounded to nearest with ties to even (lrint),
// checked where every x / step is a tie or a quarter: max|x| = kSignQuantMax makes step 1, so
// each output is exactly the integer Σ S·lrint(x).
TEST(SignKernels, QuantizationRoundsTiesToEvenOnEveryTarget) {
  const int64_t O = 21, I = 1003;  // a row that ends past a whole vector
  std::mt19937 rng(23);
  std::vector<float> x(static_cast<size_t>(I));
  for (float& v : x) v = float(int(rng() % 201) - 100) + (rng() % 4 == 0 ? 0.25f : 0.5f);
  x[7] = float(kSignQuantMax);
  const Signs s = random_signs(O, I, rng);
  std::vector<float> want(static_cast<size_t>(O));
  for (int64_t o = 0; o < O; ++o) {
    long sum = 0;
    for (int64_t i = 0; i < I; ++i)
      sum += long(s.dense[size_t(o * I + i)]) * std::lrint(x[size_t(i)]);
    want[size_t(o)] = float(sum);
  }
  const float scale = 1.0f;
  test::for_each_target([&] {
    std::vector<float> y(size_t(O), 0.0f);
    sign_matmul(y.data(), x.data(), s.bits.data(), &scale, false, 1, O, I);
    EXPECT_EQ(y, want);
  });
}

// A token whose x holds inf or NaN gives NaN outputs through the few-token path, as F32 sums
// would, on every target, and the other tokens of the call stay finite.
TEST(SignKernels, NonFiniteTokensGiveNaNOutputs) {
  const int64_t O = 18, I = 37;
  std::mt19937 rng(29);
  const Signs s = random_signs(O, I, rng);
  const float scale = 0.5f;
  for (const float bad :
       {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    std::vector<float> x = random_values(size_t(2 * I), rng);
    x[size_t(I + 3)] = bad;  // token 1 only
    test::for_each_target([&] {
      std::vector<float> y(size_t(2 * O), 0.0f);
      sign_matmul(y.data(), x.data(), s.bits.data(), &scale, false, 2, O, I);
      for (int64_t o = 0; o < O; ++o) {
        EXPECT_TRUE(std::isfinite(y[size_t(o)])) << "row " << o;
        EXPECT_TRUE(std::isnan(y[size_t(O + o)])) << "row " << o;
      }
    });
  }
}

// The few-token kernels' integer sums at their extremes: every q at ±kSignQuantMax (x = ±1) over
// rows of 40,000 columns (39 flushes of the lookups' 16-bit sums), all signs +1, all −1, and
// mixed, on every target, against the exact sum in double.
TEST(SignKernels, FewTokenSumsAreExactAtTheExtremes) {
  const int64_t O = 19, I = 40000;
  std::mt19937 rng(19);
  std::vector<float> x(static_cast<size_t>(I));
  for (float& v : x) v = rng() & 1 ? 1.0f : -1.0f;
  std::vector<uint8_t> bits(size_t(O * sign_row_bytes(I)), 0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) {
      // Row 0: every sign +1; row 1: every sign −1; row 2: S = sign(x); the rest random.
      const bool plus = o == 0 || (o == 2 && x[size_t(i)] > 0) || (o > 2 && (rng() & 1));
      if (plus) bits[size_t(o * sign_row_bytes(I) + i / 8)] |= uint8_t(1 << (i % 8));
    }
  std::vector<double> want(size_t(O), 0.0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) {
      const bool plus = bits[size_t(o * sign_row_bytes(I) + i / 8)] >> (i % 8) & 1;
      want[size_t(o)] += (plus ? 1.0 : -1.0) * x[size_t(i)];
    }
  const float scale = 1.0f;
  test::for_each_target([&] {
    std::vector<float> y(size_t(O), 0.0f);
    sign_matmul(y.data(), x.data(), bits.data(), &scale, false, 1, O, I);
    for (int64_t o = 0; o < O; ++o)
      EXPECT_NEAR(y[size_t(o)], want[size_t(o)], 1e-6 * I) << "row " << o;
  });
  EXPECT_DOUBLE_EQ(want[2], double(I));
}

// A served batch: segments of different users' signs (few-token ones sharing one pass, a long
// one on SGEMM, an empty one) give exactly what sign_matmul gives each segment alone, on every
// target, with threads (O·I above the threshold).
TEST(SignKernels, SegmentsMatchOneProductPerSegment) {
  const int64_t O = 70, I = 1000;
  static_assert(O * I >= kSignParallelElements && 9 > kSignGemvMaxTokens);
  std::mt19937 rng(5);
  const std::vector<int64_t> rows = {1, 3, 0, 9, 1, 8};
  std::vector<Signs> signs;
  std::vector<std::vector<float>> scales;
  std::vector<SignSegment> segments;
  int64_t total = 0;
  for (size_t s = 0; s < rows.size(); ++s) {
    signs.push_back(random_signs(O, I, rng));
    scales.push_back(random_values(size_t(O), rng, 0.001f, 0.05f));
    segments.push_back({total, rows[s], signs[s].bits.data(), scales[s].data(), s % 2 == 0});
    total += rows[s];
  }
  const std::vector<float> x = random_values(size_t(total * I), rng);
  const std::vector<float> y0 = random_values(size_t(total * O), rng);
  test::for_each_target([&] {
    std::vector<float> want = y0, got = y0;
    for (const SignSegment& s : segments)
      sign_matmul(want.data() + s.row0 * O, x.data() + s.row0 * I, s.bits, s.scale, s.per_row,
                  s.rows, O, I);
    sign_matmul_segments(got.data(), x.data(), segments, O, I);
    EXPECT_EQ(got, want);
  });
}

// A long prompt chunk by lookups (the bound generation raises on AMX) equals its rows one by one:
// with rows of 5632 columns (44 KiB of tables per row on AVX-512) the kernel passes the tiles
// once per group of rows whose tables fit L2, so 50 rows make three groups there; with and
// without packed tiles, scale per row and per matrix.
TEST(SignKernels, LongLookupSegmentMatchesItsRowsOneByOne) {
  const int64_t O = 40, I = 5632, R = 50;
  std::mt19937 rng(17);
  const Signs s = random_signs(O, I, rng);
  const std::vector<float> scale = random_values(size_t(O), rng, 0.001f, 0.05f);
  const std::vector<float> x = random_values(size_t(R * I), rng);
  const std::vector<float> y0 = random_values(size_t(R * O), rng);
  test::for_each_target([&] {
    const int64_t bytes = sign_tiles_bytes(O, I);
    auto tiles = hwy::AllocateAligned<uint8_t>(size_t(std::max<int64_t>(bytes, 1)));
    pack_sign_tiles(s.bits.data(), O, I, tiles.get());
    const uint8_t* packed_tiles = tiles.get();
    for (const uint8_t* packed : {static_cast<const uint8_t*>(nullptr), packed_tiles}) {
      if (packed && bytes == 0) continue;
      for (bool per_row : {false, true}) {
        SCOPED_TRACE(::testing::Message() << (packed ? "tiles" : "row-major bits")
                                          << (per_row ? ", per row" : ", per matrix"));
        const SignSegment chunk{0, R, s.bits.data(), scale.data(), per_row, packed, R};
        std::vector<SignSegment> single_rows;
        for (int64_t r = 0; r < R; ++r)
          single_rows.push_back({r, 1, s.bits.data(), scale.data(), per_row, packed, R});
        std::vector<float> want = y0, got = y0;
        sign_matmul_segments(want.data(), x.data(), single_rows, O, I);
        sign_matmul_segments(got.data(), x.data(), {&chunk, 1}, O, I);
        EXPECT_EQ(got, want);
      }
    }
  });
}

// The fused one-token pass gives the result of its two passes (matmul, then the signs) bit for
// bit, on every target, dtype, scale kind and accumulation, for shapes with partial tiles of rows
// (O not a multiple of 16) and partial chunks of columns (I not a multiple of 256 or 8), on
// either side of the threads threshold, and refuses a segment that is not the one token.
TEST(SignKernels, OneTokenPassMatchesMatmulThenSigns) {
  std::mt19937 rng(11);
  for (const auto& [rows, columns] : {std::pair<int64_t, int64_t>{37, 1000},
                                      {70, 1000},
                                      {16, 256},
                                      {1, 3},
                                      {300, 9},
                                      {129, 2051}}) {
    const int64_t O = rows, I = columns;  // lambdas cannot capture bindings
    const Signs s = random_signs(O, I, rng);
    const std::vector<float> scale = random_values(size_t(O), rng, 0.001f, 0.05f);
    const std::vector<float> w = random_values(size_t(O * I), rng);
    const std::vector<float> x = random_values(size_t(I), rng);
    const std::vector<float> y0 = random_values(size_t(O), rng);
    for (const DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      std::vector<uint8_t> stored(size_t(O * I) * dtype_size(dtype));
      from_f32(dtype, w.data(), stored.data(), w.size());
      const TensorView weight{dtype, {O, I}, stored.data()};
      for (const bool per_row : {false, true}) {
        const SignSegment segment{0, 1, s.bits.data(), scale.data(), per_row};
        for (const bool accumulate : {false, true}) {
          SCOPED_TRACE(::testing::Message()
                       << "O=" << O << " I=" << I << " " << dtype_name(dtype)
                       << " per_row=" << per_row << " accumulate=" << accumulate);
          test::for_each_target([&] {
            std::vector<float> want = y0, got = y0;
            matmul(want.data(), x.data(), weight, 1, accumulate);
            sign_matmul_segments(want.data(), x.data(), {&segment, 1}, O, I);
            matmul_sign_one_token(got.data(), x.data(), weight, segment, accumulate);
            EXPECT_EQ(got, want);
          });
        }
      }
    }
    const TensorView weight{DType::F32, {O, I}, w.data()};
    std::vector<float> y = y0;
    const SignSegment two_rows{0, 2, s.bits.data(), scale.data(), true, nullptr};

    EXPECT_THROW(matmul_sign_one_token(y.data(), x.data(), weight, two_rows, false), Error);
  }
}

// The merged product x·(W + γ ⊙ S)ᵀ (long segments: one SGEMM on widened rows with ±γ added) on
// a grid where every F32 sum is exact: x = k/64 with |x| in [0.5, 1], W = j/128 with |j| ≤ 128
// (exact in BF16 and F16), γ a power of two per row, so products have 15 significant bits and
// sums of 100 of them stay below 2^7 on a 2^-13 grid. Any order of summation then gives the
// float64 result exactly, and one flipped sign moves an output by 2γ|x| ≥ 2^-7. Rows of W span
// two of the widened blocks (4 MiB of F32 each); every target, dtype, scale kind, accumulation.
TEST(SignKernels, MergedProductIsExactOnAGrid) {
  const int64_t T = 9, O = 10500, I = 100;
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> x_step(32, 64), w_step(-128, 128), power(5, 7);
  std::vector<float> x(size_t(T * I)), w(size_t(O * I)), y0(size_t(T * O));
  std::vector<float> row_scale(static_cast<size_t>(O));
  for (float& v : x) v = float(x_step(rng) * (rng() & 1 ? 1 : -1)) / 64;
  for (float& v : w) v = float(w_step(rng)) / 128;
  for (float& v : y0) v = float(w_step(rng)) / 64;
  for (float& g : row_scale) g = std::ldexp(1.0f, -power(rng));
  const float matrix_scale = 1.0f / 32;
  const Signs s = random_signs(O, I, rng);
  Signs flipped = s;
  flipped.bits[size_t(O / 2 * sign_row_bytes(I))] ^= 1;
  for (const DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    std::vector<uint8_t> stored(w.size() * dtype_size(dtype));
    from_f32(dtype, w.data(), stored.data(), w.size());
    const TensorView weight{dtype, {O, I}, stored.data()};
    for (const bool per_row : {false, true}) {
      const float* scale = per_row ? row_scale.data() : &matrix_scale;
      for (const bool accumulate : {false, true}) {
        SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << " per_row=" << per_row
                                          << " accumulate=" << accumulate);
        std::vector<float> want(y0.size());
        for (int64_t t = 0; t < T; ++t)
          for (int64_t o = 0; o < O; ++o) {
            double sum = accumulate ? double(y0[size_t(t * O + o)]) : 0.0;
            for (int64_t i = 0; i < I; ++i)
              sum += double(x[size_t(t * I + i)]) *
                     (double(w[size_t(o * I + i)]) +
                      double(scale[per_row ? o : 0]) * s.dense[size_t(o * I + i)]);
            want[size_t(t * O + o)] = float(sum);
          }
        test::for_each_target([&] {
          std::vector<float> got = y0, got_flipped = y0;
          matmul_merged_signs(got.data(), x.data(), weight, {0, T, s.bits.data(), scale, per_row},
                              accumulate);
          EXPECT_EQ(got, want);
          matmul_merged_signs(got_flipped.data(), x.data(), weight,
                              {0, T, flipped.bits.data(), scale, per_row}, accumulate);
          EXPECT_NE(got_flipped, want);
        });
      }
    }
  }
  // Rows past the first: the segment's rows of x and y, the others untouched.
  const TensorView weight{DType::F32, {O, I}, w.data()};
  std::vector<float> whole = y0, part = y0;
  matmul_merged_signs(whole.data(), x.data(), weight, {0, T, s.bits.data(), &matrix_scale, false},
                      true);
  matmul_merged_signs(part.data(), x.data(), weight, {3, 4, s.bits.data(), &matrix_scale, false},
                      true);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < O; o += 997)
      EXPECT_EQ(part[size_t(t * O + o)], (t >= 3 && t < 7 ? whole : y0)[size_t(t * O + o)]);
}

// Signs packed ahead (pack_sign_tiles, as the server's adapter cache does) give the same bits of
// output as signs transposed on every call, through the segments (one and several tokens per
// segment) and the one-token pass, on every target (those without the layout pack nothing).
TEST(SignKernels, PackedTilesMatchTheRowMajorBits) {
  std::mt19937 rng(13);
  for (const auto& [rows, columns] :
       {std::pair<int64_t, int64_t>{70, 1000}, {16, 256}, {1, 3}, {129, 2051}}) {
    const int64_t O = rows, I = columns;  // lambdas cannot capture bindings
    const Signs s = random_signs(O, I, rng);
    const std::vector<float> scale = random_values(size_t(O), rng, 0.001f, 0.05f);
    const std::vector<float> w = random_values(size_t(O * I), rng);
    const std::vector<float> x = random_values(size_t(4 * I), rng);
    const std::vector<float> y0 = random_values(size_t(4 * O), rng);
    const TensorView weight{DType::F32, {O, I}, w.data()};
    test::for_each_target([&] {
      SCOPED_TRACE(::testing::Message() << "O=" << O << " I=" << I);
      const int64_t bytes = sign_tiles_bytes(O, I);
      auto tiles = hwy::AllocateAligned<uint8_t>(size_t(std::max<int64_t>(bytes, 1)));
      pack_sign_tiles(s.bits.data(), O, I, tiles.get());
      const uint8_t* packed = bytes > 0 ? tiles.get() : nullptr;
      const std::vector<SignSegment> rows_major = {{0, 1, s.bits.data(), scale.data(), true},
                                                   {1, 3, s.bits.data(), scale.data(), false}};
      std::vector<SignSegment> with_tiles = rows_major;
      for (SignSegment& segment : with_tiles) segment.tiles = packed;
      std::vector<float> want = y0, got = y0;
      sign_matmul_segments(want.data(), x.data(), rows_major, O, I);
      sign_matmul_segments(got.data(), x.data(), with_tiles, O, I);
      EXPECT_EQ(got, want);
      want.assign(y0.begin(), y0.begin() + O), got = want;
      matmul_sign_one_token(want.data(), x.data(), weight, rows_major[0], true);
      matmul_sign_one_token(got.data(), x.data(), weight, with_tiles[0], true);
      EXPECT_EQ(got, want);
    });
  }
}

}  // namespace
}  // namespace bd
