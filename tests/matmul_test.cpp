// bd::matmul against a double-precision reference, for every weight dtype, both paths (streaming
// GEMV and SGEMM), odd shapes, and every SIMD target compiled into the kernels.
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "kernels/matmul_amx.h"
#include "kernels/matmul_gemv.h"
#include "kernels/matmul_panels.h"
#include "kernels/parallel.h"
#include "simd_targets.h"

namespace bd {
namespace {

// A weight matrix stored in `dtype` and the exact F32 values it holds.
struct Weight {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  TensorView view;
};

Weight random_weight(DType dtype, int64_t O, int64_t I, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  Weight w;
  w.values.resize(size_t(O * I));
  w.bytes.resize(w.values.size() * dtype_size(dtype));
  for (float& v : w.values) v = uniform(rng);
  from_f32(dtype, w.values.data(), w.bytes.data(), w.values.size());
  to_f32(dtype, w.bytes.data(), w.values.data(), w.values.size());  // the rounded values
  w.view = TensorView{dtype, {O, I}, w.bytes.data()};
  return w;
}

// Checks out[T, O] against (start +) in · W^T computed in double. Tolerance: Higham's bound
// for any order of n F32 multiply-adds, |error| ≤ γ_n Σ|x_i w_i| with γ_n = n·u / (1 − n·u),
// u = 2^-24 — it holds for every summation order, yet a dropped, doubled or misplaced term
// (of size ~ Σ|x_i w_i| / I) breaks it by orders of magnitude for the sizes here.
void expect_matches_reference(const std::vector<float>& out, const std::vector<float>& in,
                              const Weight& w, int64_t T, const std::vector<float>* start) {
  const int64_t O = w.view.dim(0), I = w.view.dim(1);
  const double u = std::ldexp(1.0, -24);
  const double n = double(I + 1);
  const double gamma = n * u / (1 - n * u);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t o = 0; o < O; ++o) {
      double exact = start ? (*start)[size_t(t * O + o)] : 0.0;
      double magnitude = std::abs(exact);
      for (int64_t i = 0; i < I; ++i) {
        const double term = double(in[size_t(t * I + i)]) * double(w.values[size_t(o * I + i)]);
        exact += term;
        magnitude += std::abs(term);
      }
      ASSERT_NEAR(out[size_t(t * O + o)], exact, gamma * magnitude + 1e-30)
          << "T=" << T << " O=" << O << " I=" << I << " at t=" << t << " o=" << o;
    }
  }
}

void check_shape(DType dtype, int64_t T, int64_t O, int64_t I, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << dtype_name(dtype) << " T=" << T << " O=" << O << " I=" << I);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const Weight w = random_weight(dtype, O, I, rng);
  std::vector<float> in(size_t(T * I)), start(size_t(T * O));
  for (float& v : in) v = uniform(rng);
  for (float& v : start) v = uniform(rng);

  std::vector<float> out(start.size(), std::numeric_limits<float>::quiet_NaN());
  matmul(out.data(), in.data(), w.view, T, /*accumulate=*/false);
  expect_matches_reference(out, in, w, T, nullptr);

  out = start;
  matmul(out.data(), in.data(), w.view, T, /*accumulate=*/true);
  expect_matches_reference(out, in, w, T, &start);
}

constexpr DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16};

// The threshold for threads of the GEMV (rows split across threads) and of the widening of
// BF16/F16 row blocks for SGEMM (kernels/parallel.h): O·I, resp. rows·I, elements.
constexpr int64_t kMatmulParallelElements = kMinParallelElements;

// Every path (streaming GEMV for T < 4, tiles of rows × tokens up to kGemvMaxTokens with every
// leftover count of rows and tokens, SGEMM beyond), all below the threshold for threads
// (37 × 257 elements): the single-threaded kernels and widening.
TEST(Matmul, OddShapesEveryDtypeEveryTarget) {
  static_assert(kGemvMaxTokens == 256 && 37 * 257 < kMatmulParallelElements);
  std::mt19937 rng(1234);
  test::for_each_target([&] {
    for (DType dtype : kFloatTypes) {
      for (int64_t T : {1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 256, 257}) {
        for (int64_t O : {1, 3, 4, 5, 37}) {
          for (int64_t I : {1, 7, 16, 33, 100, 257}) check_shape(dtype, T, O, I, rng);
        }
      }
    }
  });
}

// 1100 × 1000 F32 = 4.4 MB: more than one block of widened rows, 1048 rows widened on threads,
// then the last 52 rows (below the threshold) on one.
TEST(Matmul, SgemmPathSpansSeveralWidenedBlocks) {
  static_assert(1048 * 1000 >= kMatmulParallelElements && 52 * 1000 < kMatmulParallelElements);
  std::mt19937 rng(99);
  for (DType dtype : kFloatTypes) check_shape(dtype, 19, 1100, 1000, rng);
}

// The threaded GEMV: 300 × 2051 elements, chunks of rows taken by both threads.
TEST(Matmul, GemvMatchesForLargeRows) {
  static_assert(300 * 2051 >= kMatmulParallelElements);
  std::mt19937 rng(7);
  test::for_each_target([&] {
    for (DType dtype : kFloatTypes) check_shape(dtype, 1, 300, 2051, rng);
  });
}

// The panel product (kernels/matmul_panels.h) against the same reference: strips with fewer
// than 16 rows, columns that do not fill the 16-column packing, every leftover token count, on
// every target; then a matrix large enough for both threads.
void check_panels(int64_t T, int64_t O, int64_t I, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << "panels T=" << T << " O=" << O << " I=" << I);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const Weight w = random_weight(DType::BF16, O, I, rng);
  std::vector<uint32_t> panels(size_t(panel_bytes(O, I)) / 4 + 8);
  uint32_t* aligned = panels.data();
  while (reinterpret_cast<uintptr_t>(aligned) % 32 != 0) ++aligned;
  pack_panels(w.view, aligned);
  std::vector<float> in(size_t(T * I)), start(size_t(T * O));
  for (float& v : in) v = uniform(rng);
  for (float& v : start) v = uniform(rng);
  std::vector<float> out(start.size(), std::numeric_limits<float>::quiet_NaN());
  matmul_panels(out.data(), in.data(), aligned, O, I, T, /*accumulate=*/false);
  expect_matches_reference(out, in, w, T, nullptr);
  out = start;
  matmul_panels(out.data(), in.data(), aligned, O, I, T, /*accumulate=*/true);
  expect_matches_reference(out, in, w, T, &start);
}

TEST(MatmulPanels, OddShapesEveryTarget) {
  std::mt19937 rng(4321);
  test::for_each_target([&] {
    for (int64_t T : {1, 2, 3, 4, 5, 6, 7, 13}) {
      for (int64_t O : {1, 5, 16, 17, 37}) {
        for (int64_t I : {1, 7, 16, 33, 100}) check_panels(T, O, I, rng);
      }
    }
  });
}

TEST(MatmulPanels, ThreadedStrips) {
  static_assert(300 * 2051 >= kMatmulParallelElements);
  std::mt19937 rng(8);
  test::for_each_target([&] { check_panels(9, 300, 2051, rng); });
}

TEST(MatmulPanels, RejectsOtherDtypes) {
  std::mt19937 rng(3);
  const Weight w = random_weight(DType::F32, 4, 4, rng);
  std::vector<uint32_t> panels(64);
  EXPECT_THROW(pack_panels(w.view, panels.data()), Error);
}

// AMX (kernels/matmul_amx.h), on CPUs that have it: the reference for row counts around the
// 16-row tiles and the 4-tile units of work, token counts around the 16-token groups and the
// 4-group passes, with and without threads.
void check_amx(int64_t T, int64_t O, int64_t I, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << "AMX T=" << T << " O=" << O << " I=" << I);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const Weight w = random_weight(DType::BF16, O, I, rng);
  std::vector<float> in(size_t(T * I)), start(size_t(T * O));
  for (float& v : in) v = uniform(rng);
  for (float& v : start) v = uniform(rng);
  std::vector<float> out(start.size(), std::numeric_limits<float>::quiet_NaN());
  ASSERT_TRUE(matmul_amx(out.data(), in.data(), w.view, T, /*accumulate=*/false));
  expect_matches_reference(out, in, w, T, nullptr);
  out = start;
  ASSERT_TRUE(matmul_amx(out.data(), in.data(), w.view, T, /*accumulate=*/true));
  expect_matches_reference(out, in, w, T, &start);
}

TEST(MatmulAmx, MatchesReference) {
  if (!amx_available()) GTEST_SKIP() << "this CPU has no AMX";
  std::mt19937 rng(2468);
  for (int64_t T : {kAmxMinTokens, int64_t(5), int64_t(15), int64_t(16), int64_t(17), int64_t(33),
                    kAmxPassTokens}) {
    for (int64_t O : {1, 15, 16, 17, 64, 65, 80}) {
      for (int64_t I : {32, 96}) check_amx(T, O, I, rng);
    }
  }
  static_assert(300 * 2048 >= kMatmulParallelElements);
  for (int64_t T : {int64_t(4), int64_t(16), int64_t(40), 2 * kAmxPassTokens + 2})
    check_amx(T, 300, 2048, rng);  // the last in 3 passes
}

// A token's row of the product is the same, bit for bit, whatever else is in the batch: in a
// batch of 4 with three other tokens, in a group of 16, in 4 groups (the other kernel), and in
// the second pass of a longer batch; so a user's greedy tokens do not depend on who they are
// batched with.
TEST(MatmulAmx, TokenRowsDoNotDependOnTheBatch) {
  if (!amx_available()) GTEST_SKIP() << "this CPU has no AMX";
  std::mt19937 rng(1357);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  constexpr int64_t O = 67, I = 1024, kSmall = kAmxMinTokens, kMost = kAmxPassTokens + 20;
  const Weight w = random_weight(DType::BF16, O, I, rng);
  std::vector<float> in(size_t(kMost * I)), small_in(size_t(kSmall * I));
  for (float& v : in) v = uniform(rng);
  for (float& v : small_in) v = uniform(rng);
  std::vector<float> batch(size_t(kMost * O)), small(size_t(kSmall * O));
  for (int64_t T : {int64_t(16), kAmxPassTokens, kMost}) {
    ASSERT_TRUE(matmul_amx(batch.data(), in.data(), w.view, T, false));
    for (int64_t t = 0; t < T; ++t) {
      std::copy_n(in.data() + t * I, I, small_in.data() + (t % kSmall) * I);  // among others
      ASSERT_TRUE(matmul_amx(small.data(), small_in.data(), w.view, kSmall, false));
      for (int64_t o = 0; o < O; ++o) {
        ASSERT_EQ(small[size_t((t % kSmall) * O + o)], batch[size_t(t * O + o)])
            << "T=" << T << " t=" << t;
      }
    }
  }
}

// The three BF16 terms carry all 24 bits of x: times the identity, x comes back bit for bit
// (two terms would lose its last 8 bits; the Higham bound above would not notice).
TEST(MatmulAmx, IdentityReturnsXExactly) {
  if (!amx_available()) GTEST_SKIP() << "this CPU has no AMX";
  constexpr int64_t N = 96, T = 16;
  std::vector<float> identity(size_t(N * N), 0.0f);
  for (int64_t i = 0; i < N; ++i) identity[size_t(i * N + i)] = 1.0f;
  std::vector<uint16_t> bf16(identity.size());
  from_f32(DType::BF16, identity.data(), bf16.data(), identity.size());
  std::mt19937 rng(24);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> in(size_t(T * N)), out(in.size());
  for (float& v : in) v = uniform(rng) * 1000.0f;
  ASSERT_TRUE(
      matmul_amx(out.data(), in.data(), TensorView{DType::BF16, {N, N}, bf16.data()}, T, false));
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], in[i]) << "at " << i;
}

// What AMX does not cover goes to the other kernels (the result checked by the tests above).
TEST(MatmulAmx, DeclinesWhatItDoesNotCover) {
  std::mt19937 rng(11);
  std::vector<float> in(size_t(65 * 64)), out(size_t(65 * 64));
  const Weight f32 = random_weight(DType::F32, 16, 64, rng);
  const Weight odd = random_weight(DType::BF16, 16, 48, rng);
  const Weight bf16 = random_weight(DType::BF16, 16, 64, rng);
  EXPECT_FALSE(matmul_amx(out.data(), in.data(), f32.view, 16, false));
  EXPECT_FALSE(matmul_amx(out.data(), in.data(), odd.view, 16, false));
  EXPECT_FALSE(matmul_amx(out.data(), in.data(), bf16.view, kAmxMinTokens - 1, false));
  EXPECT_EQ(matmul_amx(out.data(), in.data(), bf16.view, 16, false), amx_available());
  set_amx_enabled(false);
  EXPECT_FALSE(matmul_amx(out.data(), in.data(), bf16.view, 16, false));
  set_amx_enabled(true);
}

TEST(Matmul, EmptyShapes) {
  std::mt19937 rng(5);
  for (DType dtype : kFloatTypes) {
    for (int64_t T : {1, 17}) {
      const Weight w = random_weight(dtype, 3, 0, rng);
      std::vector<float> out(size_t(T * 3), 5.0f);
      matmul(out.data(), nullptr, w.view, T, /*accumulate=*/true);
      EXPECT_EQ(out, std::vector<float>(out.size(), 5.0f));
      matmul(out.data(), nullptr, w.view, T, /*accumulate=*/false);
      EXPECT_EQ(out, std::vector<float>(out.size(), 0.0f));
    }
    matmul(nullptr, nullptr, random_weight(dtype, 0, 4, rng).view, 3);
  }
}

TEST(Matmul, RejectsBadWeights) {
  const float data[4] = {};
  float out[4];
  EXPECT_THROW(matmul(out, data, TensorView{DType::F32, {4}, data}, 1), Error);
  EXPECT_THROW(matmul(out, data, TensorView{DType::U8, {2, 2}, data}, 1), Error);
  EXPECT_THROW(matmul(out, data, TensorView{DType::I32, {2, 2}, data}, 17), Error);
}

// The SIMD widening equals the scalar conversions in core for every 16-bit pattern
// (NaN stays NaN; the F16C conversion may quiet a signalling NaN).
TEST(WidenToF32, EveryBitPattern) {
  std::vector<uint16_t> bits(65536 + 5);  // + 5: a tail that does not fill a vector
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = uint16_t(i);
  test::for_each_target([&] {
    for (DType dtype : {DType::BF16, DType::F16}) {
      std::vector<float> wide(bits.size());
      widen_to_f32(dtype, bits.data(), wide.data(), bits.size());
      for (size_t i = 0; i < bits.size(); ++i) {
        const float expected = dtype == DType::BF16 ? bf16_to_f32(bits[i]) : f16_to_f32(bits[i]);
        if (std::isnan(expected)) {
          ASSERT_TRUE(std::isnan(wide[i])) << dtype_name(dtype) << " bits " << bits[i];
        } else {
          ASSERT_EQ(std::memcmp(&wide[i], &expected, 4), 0)
              << dtype_name(dtype) << " bits " << bits[i] << ": " << wide[i] << " vs " << expected;
        }
      }
    }
  });
}

}  // namespace
}  // namespace bd
