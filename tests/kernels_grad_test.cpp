// Finite-difference checks of every kernel's backward pass, and of the forwards against direct
// double-precision formulas. Each check projects the kernel's output on fixed random weights w
// (L = Σ w·out, accumulated in double) and compares the backward's gradient for dout = w with
// central differences (L(x + ε) - L(x - ε)) / 2ε of the F32 forward. With ε = 5e-3 the
// differences are accurate to about 1e-4 of the largest gradient (F32 rounding over ε, plus
// O(ε²) truncation), so the tolerance is 2e-3 · max|gradient|: a wrong term gives errors of
// order 1. At the end, the threaded kernels on sizes either side of kMinParallelWork against
// double-precision formulas of forward and backward, element by element.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <numbers>
#include <random>
#include <vector>

#include "core/error.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/parallel.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "model/linear.h"
#include "test_util.h"

namespace bd {
namespace {

constexpr float kEps = 5e-3f;
constexpr double kTolerance = 2e-3;

std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(n);
  for (float& v : values) v = normal(rng);
  return values;
}

double project(const std::vector<float>& out, const std::vector<float>& w) {
  double sum = 0;
  for (size_t i = 0; i < out.size(); ++i) sum += double(out[i]) * w[i];
  return sum;
}

// Central differences of loss() with respect to every element of x (perturbed in place).
std::vector<double> numeric_grad(std::vector<float>& x, const std::function<double()>& loss) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float saved = x[i];
    x[i] = saved + kEps;
    const double plus = loss();
    x[i] = saved - kEps;
    const double minus = loss();
    x[i] = saved;
    grad[i] = (plus - minus) / (2.0 * double(kEps));
  }
  return grad;
}

// max |analytic - numeric| / max |numeric| below kTolerance. Normwise on purpose: the finite
// differences' error is the loss's F32 rounding over ε, the same absolute size for every entry,
// so a per-element relative bound would fail on entries that are near zero.
#define EXPECT_GRAD(analytic, x, loss) \
  EXPECT_LT(test::max_relative_error(analytic, numeric_grad(x, loss)), kTolerance) << #analytic

TEST(Rmsnorm, ForwardMatchesFormula) {
  const int64_t N = 3, C = 7;
  const float eps = 1e-5f;
  std::vector<float> x = random_vector(N * C, 1), weight = random_vector(C, 2), out(N * C);
  std::vector<float> inv_rms(N);
  rmsnorm_forward(out.data(), inv_rms.data(), x.data(), weight.data(), N, C, eps);
  for (int64_t n = 0; n < N; ++n) {
    double mean_sq = 0;
    for (int64_t c = 0; c < C; ++c) mean_sq += double(x[n * C + c]) * x[n * C + c] / C;
    for (int64_t c = 0; c < C; ++c)
      EXPECT_NEAR(out[n * C + c], x[n * C + c] / std::sqrt(mean_sq + eps) * weight[c], 1e-5);
  }
}

TEST(Rmsnorm, BackwardMatchesFiniteDifferences) {
  const int64_t N = 3, C = 7;
  const float eps = 1e-5f;
  std::vector<float> x = random_vector(N * C, 1), weight = random_vector(C, 2);
  const std::vector<float> w = random_vector(N * C, 3);
  std::vector<float> out(N * C), inv_rms(N);
  auto loss = [&] {
    rmsnorm_forward(out.data(), inv_rms.data(), x.data(), weight.data(), N, C, eps);
    return project(out, w);
  };
  loss();
  // Backward accumulates: start from a known non-zero gradient and subtract it afterwards.
  std::vector<float> dx(N * C, 0.5f), dweight(C, -0.25f);
  rmsnorm_backward(dx.data(), dweight.data(), w.data(), x.data(), weight.data(), inv_rms.data(), N,
                   C);
  for (float& v : dx) v -= 0.5f;
  for (float& v : dweight) v += 0.25f;
  EXPECT_GRAD(dx, x, loss);
  EXPECT_GRAD(dweight, weight, loss);
}

// The HF definition: out = x·cos + rotate_half(x)·sin, rotate_half(x) = [-x2, x1].
TEST(Rope, ForwardMatchesRotateHalf) {
  const int64_t B = 2, n = 3, H = 2, D = 8, pos0 = 5;
  const std::vector<double> inv_freq = rope_inv_freq(D, 10000.0);
  std::vector<float> x = random_vector(B * n * H * D, 4), out = x;
  rope_forward(out.data(), inv_freq.data(), B, n, H, D, pos0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t base = ((b * n + t) * H + h) * D, i = d % (D / 2);
          const double angle = double(pos0 + t) * std::pow(10000.0, -2.0 * i / D);
          const double rotated = d < D / 2 ? -x[base + d + D / 2] : x[base + d - D / 2];
          EXPECT_NEAR(out[base + d], x[base + d] * std::cos(angle) + rotated * std::sin(angle),
                      1e-5);
        }
}

TEST(Rope, Llama3ScalingFollowsThePublishedRule) {
  // Llama 3.1: theta 500000, factor 8, low 1, high 4, original context 8192, head_dim 128.
  std::vector<double> scaled = rope_inv_freq(128, 500000.0);
  const std::vector<double> base = scaled;
  rope_scale_llama3(scaled, 8.0, 1.0, 4.0, 8192.0);
  int kept = 0, divided = 0, blended = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / base[i];
    if (wavelen < 8192.0 / 4) {
      EXPECT_EQ(scaled[i], base[i]);
      ++kept;
    } else if (wavelen > 8192.0) {
      EXPECT_DOUBLE_EQ(scaled[i], base[i] / 8);
      ++divided;
    } else {
      const double s = (8192.0 / wavelen - 1.0) / 3.0;
      EXPECT_DOUBLE_EQ(scaled[i], (1 - s) * base[i] / 8 + s * base[i]);
      EXPECT_LT(scaled[i], base[i]);
      EXPECT_GT(scaled[i], base[i] / 8);
      ++blended;
    }
  }
  EXPECT_GT(kept, 0);  // the rule's three regimes all occur for this config
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
  std::vector<double> linear = rope_inv_freq(128, 500000.0);
  rope_scale_linear(linear, 4.0);
  EXPECT_DOUBLE_EQ(linear[3], base[3] / 4);
}

TEST(Rope, BackwardMatchesFiniteDifferences) {
  const int64_t B = 2, n = 3, H = 2, D = 8, pos0 = 4;
  for (bool llama3 : {false, true}) {
    std::vector<double> inv_freq = rope_inv_freq(D, 10000.0);
    // Small original context so that all three llama3 regimes occur at D = 8.
    if (llama3) rope_scale_llama3(inv_freq, 4.0, 1.0, 4.0, 64.0);
    std::vector<float> x = random_vector(B * n * H * D, 5);
    const std::vector<float> w = random_vector(x.size(), 6);
    auto loss = [&] {
      std::vector<float> out = x;
      rope_forward(out.data(), inv_freq.data(), B, n, H, D, pos0);
      return project(out, w);
    };
    std::vector<float> dx = w;
    rope_backward(dx.data(), inv_freq.data(), B, n, H, D, pos0);
    EXPECT_GRAD(dx, x, loss);
  }
}

// Attention written out in double, one query at a time.
std::vector<double> reference_attention(const std::vector<float>& q, const std::vector<float>& k,
                                        const std::vector<float>& v, const AttentionDims& d) {
  const int64_t H = d.heads, D = d.head_dim, group = d.heads / d.kv_heads;
  std::vector<double> out(size_t(d.batch * d.n * H * D));
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t t = 0; t < d.n; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t row = ((b * d.n + t) * H + h) * D, len = d.pos0 + t + 1;
        const int64_t kv = (b * d.kv_heads + h / group) * d.kv_capacity * D;
        std::vector<double> p(static_cast<size_t>(len));
        double total = 0;
        for (int64_t s = 0; s < len; ++s) {
          double score = 0;
          for (int64_t i = 0; i < D; ++i) score += double(q[row + i]) * k[kv + s * D + i];
          p[s] = std::exp(score / std::sqrt(double(D)));
          total += p[s];
        }
        for (int64_t s = 0; s < len; ++s)
          for (int64_t i = 0; i < D; ++i) out[row + i] += p[s] / total * v[kv + s * D + i];
      }
  return out;
}

AttentionDims gqa_dims(int64_t pos0, int64_t capacity) {
  return AttentionDims{.batch = 2,
                       .n = 4,
                       .pos0 = pos0,
                       .heads = 4,
                       .kv_heads = 2,
                       .head_dim = 6,
                       .kv_capacity = capacity};
}

TEST(Attention, ForwardMatchesReferenceWithAndWithoutKeptProbs) {
  for (const AttentionDims d : {gqa_dims(0, 4), gqa_dims(3, 9)}) {
    const int64_t q_size = d.batch * d.n * d.heads * d.head_dim;
    const int64_t kv_size = d.batch * d.kv_heads * d.kv_capacity * d.head_dim;
    const std::vector<float> q = random_vector(q_size, 7), k = random_vector(kv_size, 8),
                             v = random_vector(kv_size, 9);
    const std::vector<double> expected = reference_attention(q, k, v, d);
    std::vector<float> kept(q_size), scratch(q_size);
    std::vector<float> probs(d.batch * d.heads * d.n * d.keys());
    std::vector<float> scratch_probs(d.batch * d.heads * d.kv_capacity);
    attention_forward(kept.data(), probs.data(), q.data(), k.data(), v.data(), d, true);
    attention_forward(scratch.data(), scratch_probs.data(), q.data(), k.data(), v.data(), d, false);
    for (int64_t i = 0; i < q_size; ++i) {
      EXPECT_NEAR(kept[i], expected[i], 1e-5);
      EXPECT_NEAR(scratch[i], kept[i], 1e-6);  // row-wise and GEMM paths round differently
    }
  }
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  for (const AttentionDims d : {gqa_dims(0, 4), gqa_dims(2, 7)}) {
    const int64_t q_size = d.batch * d.n * d.heads * d.head_dim;
    const int64_t kv_size = d.batch * d.kv_heads * d.kv_capacity * d.head_dim;
    std::vector<float> q = random_vector(q_size, 10), k = random_vector(kv_size, 11),
                       v = random_vector(kv_size, 12);
    const std::vector<float> w = random_vector(q_size, 13);
    std::vector<float> out(q_size), probs(d.batch * d.heads * d.n * d.keys());
    auto loss = [&] {
      attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(), d, true);
      return project(out, w);
    };
    loss();
    // Positions at or beyond pos0 + n are never read: their gradient must come out zero, and
    // the backward only writes the first S positions, so start from zeros.
    std::vector<float> dq(q_size), dk(kv_size), dv(kv_size);
    attention_backward(dq.data(), dk.data(), dv.data(), w.data(), q.data(), k.data(), v.data(),
                       probs.data(), d);
    EXPECT_GRAD(dq, q, loss);
    EXPECT_GRAD(dk, k, loss);
    EXPECT_GRAD(dv, v, loss);
  }
}

TEST(Attention, KvStoreAndLoadAreInverse) {
  const AttentionDims d = gqa_dims(3, 9);
  const int64_t rows_size = d.batch * d.n * d.kv_heads * d.head_dim;
  const std::vector<float> rows = random_vector(rows_size, 14);
  std::vector<float> kv(d.batch * d.kv_heads * d.kv_capacity * d.head_dim, 0.0f);
  kv_store(kv.data(), rows.data(), d);
  // Row (b=1, t=2, head 1) lands at kv[b=1, head 1, position pos0 + 2].
  const int64_t D = d.head_dim;
  EXPECT_EQ(kv[((1 * d.kv_heads + 1) * d.kv_capacity + 3 + 2) * D + 4],
            rows[((1 * d.n + 2) * d.kv_heads + 1) * D + 4]);
  std::vector<float> back(rows_size);
  kv_load(back.data(), kv.data(), d);
  EXPECT_EQ(back, rows);
}

TEST(Swiglu, ForwardAndBackward) {
  const int64_t N = 40;
  std::vector<float> gate = random_vector(N, 15, 2.0f), up = random_vector(N, 16);
  const std::vector<float> w = random_vector(N, 17);
  std::vector<float> act(N);
  swiglu_forward(act.data(), gate.data(), up.data(), N);
  for (int64_t i = 0; i < N; ++i)
    EXPECT_NEAR(act[i], gate[i] / (1 + std::exp(-double(gate[i]))) * up[i], 1e-6);
  auto loss = [&] {
    swiglu_forward(act.data(), gate.data(), up.data(), N);
    return project(act, w);
  };
  std::vector<float> dgate(N), dup(N);
  swiglu_backward(dgate.data(), dup.data(), w.data(), gate.data(), up.data(), N);
  EXPECT_GRAD(dgate, gate, loss);
  EXPECT_GRAD(dup, up, loss);
}

TEST(Embedding, LookupBackwardAndRangeCheck) {
  const int64_t V = 5, C = 3, N = 6;
  std::vector<float> table = random_vector(V * C, 18);
  const std::vector<int32_t> tokens = {4, 0, 4, 2, 1, 4};
  const std::vector<float> w = random_vector(N * C, 19);
  std::vector<float> out(N * C);
  auto loss = [&] {
    embedding_forward(out.data(), tokens.data(), TensorView{DType::F32, {V, C}, table.data()}, N);
    return project(out, w);
  };
  loss();
  EXPECT_EQ(out[2 * C + 1], table[4 * C + 1]);
  std::vector<float> dtable(V * C, 0.0f);
  embedding_backward(dtable.data(), w.data(), tokens.data(), N, C);
  EXPECT_GRAD(dtable, table, loss);  // row 3 is never looked up: gradient 0 both ways

  // BF16 tables widen exactly.
  std::vector<uint16_t> bf16(V * C);
  for (size_t i = 0; i < bf16.size(); ++i) bf16[i] = f32_to_bf16(table[i]);
  embedding_forward(out.data(), tokens.data(), TensorView{DType::BF16, {V, C}, bf16.data()}, N);
  EXPECT_EQ(out[0], bf16_to_f32(bf16[4 * C]));

  const std::vector<int32_t> bad = {1, 5};
  EXPECT_THROW(
      embedding_forward(out.data(), bad.data(), TensorView{DType::F32, {V, C}, table.data()}, 2),
      Error);
}

TEST(CrossEntropy, LossMatchesFormulaAndBackwardMatchesFiniteDifferences) {
  const int64_t N = 5, V = 9;
  std::vector<float> logits = random_vector(N * V, 20, 3.0f);
  const std::vector<int32_t> targets = {3, -1, 0, 8, 3};  // row 1 is ignored
  std::vector<float> lse(N);
  int64_t count = 0;
  auto loss = [&] {
    return double(cross_entropy_forward(lse.data(), &count, logits.data(), targets.data(), N, V));
  };
  double expected = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    double sum = 0;
    for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[n * V + i]));
    expected += std::log(sum) - logits[n * V + targets[n]];
  }
  EXPECT_NEAR(loss(), expected / 4, 1e-5);
  EXPECT_EQ(count, 4);
  std::vector<float> dlogits(N * V);
  cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), N, V,
                         1.0f / float(count));
  EXPECT_GRAD(dlogits, logits, loss);
  for (int64_t i = 0; i < V; ++i) EXPECT_EQ(dlogits[1 * V + i], 0.0f);

  const std::vector<int32_t> bad = {0, 0, 0, 9, 0};
  EXPECT_THROW(cross_entropy_forward(lse.data(), &count, logits.data(), bad.data(), N, V), Error);
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, I = 5, O = 4;
  std::vector<float> x = random_vector(rows * I, 21), W = random_vector(O * I, 22);
  const std::vector<float> w = random_vector(rows * O, 23);
  const Linear linear{"test.weight", TensorView{DType::F32, {O, I}, W.data()}};
  std::vector<float> y(rows * O);
  auto loss = [&] {
    linear_forward(y.data(), x.data(), linear, rows);
    return project(y, w);
  };
  loss();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < O; ++o) {
      double expected = 0;
      for (int64_t i = 0; i < I; ++i) expected += double(x[r * I + i]) * W[o * I + i];
      EXPECT_NEAR(y[r * O + o], expected, 1e-5);
    }
  std::vector<float> dx(rows * I), dW(O * I, 0.0f);
  linear_backward(dx.data(), dW.data(), w.data(), x.data(), linear, rows);
  EXPECT_GRAD(dx, x, loss);
  EXPECT_GRAD(dW, W, loss);

  // accumulate_dx adds; dW always accumulates.
  std::vector<float> dx2 = dx, dW2 = dW;
  linear_backward(dx2.data(), dW2.data(), w.data(), x.data(), linear, rows, {}, true);
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_FLOAT_EQ(dx2[i], 2 * dx[i]);
  for (size_t i = 0; i < dW.size(); ++i) EXPECT_FLOAT_EQ(dW2[i], 2 * dW[i]);

  // Frozen BF16 weights (a base model under a trained delta): dx is the product with the stored
  // values, as with their F32 widening, and dW may be skipped.
  std::vector<uint16_t> bf16(O * I);
  from_f32(DType::BF16, W.data(), bf16.data(), W.size());
  std::vector<float> widened(W.size());
  to_f32(DType::BF16, bf16.data(), widened.data(), W.size());
  const Linear bf16_linear{"bf16.weight", TensorView{DType::BF16, {O, I}, bf16.data()}};
  const Linear widened_linear{"widened.weight", TensorView{DType::F32, {O, I}, widened.data()}};
  std::vector<float> dx_bf16(rows * I), dx_widened(rows * I);
  linear_backward(dx_bf16.data(), nullptr, w.data(), x.data(), bf16_linear, rows);
  linear_backward(dx_widened.data(), nullptr, w.data(), x.data(), widened_linear, rows);
  for (size_t i = 0; i < dx_bf16.size(); ++i) EXPECT_NEAR(dx_bf16[i], dx_widened[i], 1e-6);
}

// ---- both sides of kMinParallelWork ------------------------------------------------------------
// The elementwise and attention kernels split their work across threads from kMinParallelWork
// floats of work on. Each test below runs a size under it (one thread) and one over it (the
// threaded loop, two threads under CTest) against formulas in double, with a bound per element
// of a few dozen F32 roundings of the magnitudes involved: far below what a race, a skipped or a
// doubled chunk of work would do.

constexpr double kU = 1.0 / (1 << 24);  // F32 unit roundoff

TEST(Rmsnorm, ForwardAndBackwardOnBothSidesOfTheThreadThreshold) {
  const float eps = 1e-5f;
  struct Size {
    int64_t N, C;
  };
  for (const Size size : {Size{5, 37}, Size{70, 515}}) {
    const int64_t N = size.N, C = size.C;  // plain variables: clang 14's lambdas cannot capture
                                           // structured bindings
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C);
    ASSERT_EQ(N * C >= kMinParallelWork, N == 70);
    const std::vector<float> x = random_vector(N * C, 30), weight = random_vector(C, 31),
                             dy = random_vector(N * C, 32), dx0 = random_vector(N * C, 33),
                             dweight0 = random_vector(C, 34);
    std::vector<float> out(N * C), inv_rms(N), dx = dx0, dweight = dweight0;
    rmsnorm_forward(out.data(), inv_rms.data(), x.data(), weight.data(), N, C, eps);
    rmsnorm_backward(dx.data(), dweight.data(), dy.data(), x.data(), weight.data(), inv_rms.data(),
                     N, C);

    // y = x·r·w, r = (mean x² + eps)^(-1/2); dx += r·dy·w − x·r³/C·Σ dy·w·x; dw += Σ_n dy·x·r.
    std::vector<double> want_out(N * C), want_r(N), want_dx(N * C), dx_size(N * C);
    std::vector<double> want_dweight(dweight0.begin(), dweight0.end()), dweight_size(C, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      double mean_sq = 0, dot = 0;
      for (int64_t c = 0; c < C; ++c) {
        mean_sq += double(x[n * C + c]) * x[n * C + c] / double(C);
        dot += double(dy[n * C + c]) * weight[c] * x[n * C + c];
      }
      const double r = 1 / std::sqrt(mean_sq + eps);
      want_r[n] = r;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = n * C + c;
        want_out[i] = x[i] * r * weight[c];
        const double a = r * dy[i] * weight[c], b = x[i] * r * r * r / double(C) * dot;
        want_dx[i] = dx0[i] + a - b;
        dx_size[i] = std::fabs(dx0[i]) + std::fabs(a) + std::fabs(b);
        want_dweight[c] += double(dy[i]) * x[i] * r;
        dweight_size[c] += std::fabs(double(dy[i]) * x[i] * r);
      }
    }
    // r is rounded once to F32; y is two F32 products.
    EXPECT_TRUE(test::all_close(inv_rms.data(), want_r.data(), N, 0.0, 4 * kU));
    EXPECT_TRUE(test::all_close(out.data(), want_out.data(), N * C, 0.0, 8 * kU));
    // The dot product is in double, the rest a few F32 operations on terms of these sizes.
    EXPECT_TRUE(test::all_within(dx.data(), want_dx.data(), N * C,
                                 [&](int64_t i) { return 16 * kU * dx_size[size_t(i)]; }));
    // dweight sums N rows in F32.
    EXPECT_TRUE(test::all_within(dweight.data(), want_dweight.data(), C, [&](int64_t c) {
      return (4 + double(N)) * kU * (dweight_size[size_t(c)] + std::fabs(dweight0[size_t(c)]));
    }));
  }
}

TEST(Rope, ForwardAndBackwardOnBothSidesOfTheThreadThreshold) {
  struct Size {
    int64_t B, n, H, D;
  };
  for (const Size z : {Size{2, 3, 2, 8}, Size{2, 64, 8, 32}}) {
    SCOPED_TRACE(::testing::Message() << "B=" << z.B << " n=" << z.n << " H=" << z.H);
    ASSERT_EQ(z.B * z.n * z.H * z.D >= kMinParallelWork, z.n == 64);
    const int64_t pos0 = 100, half = z.D / 2;
    const std::vector<double> inv_freq = rope_inv_freq(z.D, 10000.0);
    const std::vector<float> x = random_vector(z.B * z.n * z.H * z.D, 35);
    for (double sign : {1.0, -1.0}) {  // forward rotates by +angle, backward by −angle
      SCOPED_TRACE(sign > 0 ? "forward" : "backward");
      std::vector<float> out = x;
      if (sign > 0) {
        rope_forward(out.data(), inv_freq.data(), z.B, z.n, z.H, z.D, pos0);
      } else {
        rope_backward(out.data(), inv_freq.data(), z.B, z.n, z.H, z.D, pos0);
      }
      std::vector<double> want(x.size()), size(x.size());
      for (int64_t row = 0; row < z.B * z.n; ++row) {
        const double pos = double(pos0 + row % z.n);
        for (int64_t h = 0; h < z.H; ++h)
          for (int64_t i = 0; i < half; ++i) {
            const int64_t a = (row * z.H + h) * z.D + i, b = a + half;
            const double c = std::cos(pos * inv_freq[i]), s = sign * std::sin(pos * inv_freq[i]);
            want[a] = x[a] * c - x[b] * s;
            want[b] = x[b] * c + x[a] * s;
            size[a] = size[b] = std::fabs(x[a]) + std::fabs(x[b]);
          }
      }
      // cos and sin rounded to F32, two products and a sum.
      EXPECT_TRUE(test::all_within(out.data(), want.data(), int64_t(x.size()),
                                   [&](int64_t i) { return 4 * kU * size[size_t(i)]; }));
    }
  }
}

TEST(Swiglu, ForwardAndBackwardOnBothSidesOfTheThreadThreshold) {
  for (const int64_t N : {1000, 40000}) {
    SCOPED_TRACE(::testing::Message() << "N=" << N);
    ASSERT_EQ(N >= kMinParallelWork, N == 40000);
    const std::vector<float> gate = random_vector(N, 36, 3.0f), up = random_vector(N, 37),
                             dact = random_vector(N, 38);
    std::vector<float> act(N), dgate(N), dup(N);
    swiglu_forward(act.data(), gate.data(), up.data(), N);
    swiglu_backward(dgate.data(), dup.data(), dact.data(), gate.data(), up.data(), N);
    std::vector<double> want_act(N), want_dgate(N), want_dup(N), dgate_size(N);
    for (int64_t i = 0; i < N; ++i) {
      const double g = gate[i], sig = 1 / (1 + std::exp(-g));
      want_act[i] = g * sig * up[i];
      want_dgate[i] = double(dact[i]) * up[i] * sig * (1 + g * (1 - sig));
      want_dup[i] = double(dact[i]) * g * sig;
      // 1 + g·(1 − σ) cancels near g = −1.28: bound by the sizes of its terms.
      dgate_size[i] = std::fabs(double(dact[i]) * up[i] * sig) * (1 + std::fabs(g) * (1 - sig));
    }
    // exp, a division and two or three products in F32.
    EXPECT_TRUE(test::all_close(act.data(), want_act.data(), N, 0.0, 16 * kU));
    EXPECT_TRUE(test::all_close(dup.data(), want_dup.data(), N, 0.0, 16 * kU));
    EXPECT_TRUE(test::all_within(dgate.data(), want_dgate.data(), N,
                                 [&](int64_t i) { return 32 * kU * dgate_size[size_t(i)]; }));
  }
}

TEST(CrossEntropy, LossAndBackwardOnBothSidesOfTheThreadThreshold) {
  for (const auto& [N, V] : {std::pair<int64_t, int64_t>{6, 50}, {40, 1000}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V);
    ASSERT_EQ(N * V >= kMinParallelWork, V == 1000);
    const std::vector<float> logits = random_vector(N * V, 39, 3.0f);
    std::vector<int32_t> targets(N);
    for (int64_t n = 0; n < N; ++n) targets[n] = n % 5 == 2 ? -1 : int32_t((n * 37) % V);
    std::vector<float> lse(N), dlogits(N * V);
    int64_t count = 0;
    const float loss =
        cross_entropy_forward(lse.data(), &count, logits.data(), targets.data(), N, V);
    const float scale = 1.0f / float(count);
    cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), N, V, scale);

    std::vector<double> want_lse(N), want_grad(N * V, 0.0), grad_size(N * V, 0.0);
    double total = 0;
    int64_t counted = 0;
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(logits[n * V + v]));
      want_lse[n] = std::log(sum);
      if (targets[n] < 0) continue;
      total += want_lse[n] - logits[n * V + targets[n]];
      ++counted;
      for (int64_t v = 0; v < V; ++v) {
        const double z = logits[n * V + v] - want_lse[n], p = std::exp(z);
        want_grad[n * V + v] = scale * (p - (v == targets[n]));
        // exp of an argument that carries the rounding of lse and of the subtraction.
        grad_size[n * V + v] = scale * (p * (1 + std::fabs(z) + std::fabs(want_lse[n])) + 1);
      }
    }
    EXPECT_EQ(count, counted);
    EXPECT_NEAR(loss, total / double(counted), 8 * kU * total / double(counted));
    EXPECT_TRUE(test::all_close(lse.data(), want_lse.data(), N, 0.0, 4 * kU));
    EXPECT_TRUE(test::all_within(dlogits.data(), want_grad.data(), N * V,
                                 [&](int64_t i) { return 4 * kU * grad_size[size_t(i)]; }));
  }
}

// The backward of reference_attention in double: with p the softmax row of a query and
// G = dout, dP_s = G·v_s, dS_s = p_s·(dP_s − Σ p·dP)·scale, dq = Σ_s dS_s·k_s, dk_s += dS_s·q,
// dv_s += p_s·G. `size` receives the same sums over absolute values (the scale of each entry's
// rounding errors) for dq, then dk, then dv.
struct AttentionGrads {
  std::vector<double> dq, dk, dv, dq_size, dk_size, dv_size, probs;
};

AttentionGrads reference_attention_backward(const std::vector<float>& dout,
                                            const std::vector<float>& q,
                                            const std::vector<float>& k,
                                            const std::vector<float>& v, const AttentionDims& d) {
  const int64_t H = d.heads, D = d.head_dim, S = d.keys(), group = d.heads / d.kv_heads;
  const double scale = 1 / std::sqrt(double(D));
  AttentionGrads g;
  g.dq.assign(q.size(), 0.0);
  g.dq_size = g.dq;
  g.dk.assign(k.size(), 0.0);
  g.dk_size = g.dv_size = g.dv = g.dk;
  g.probs.assign(size_t(d.batch * H * d.n * S), 0.0);
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < d.n; ++t) {
        const int64_t row = ((b * d.n + t) * H + h) * D, len = d.pos0 + t + 1;
        const int64_t kv = (b * d.kv_heads + h / group) * d.kv_capacity * D;
        std::vector<double> p(static_cast<size_t>(len)), dP(static_cast<size_t>(len));
        double total = 0, peak = -HUGE_VAL;
        for (int64_t s = 0; s < len; ++s) {
          double score = 0;
          for (int64_t i = 0; i < D; ++i) score += double(q[row + i]) * k[kv + s * D + i];
          p[s] = score * scale;
          peak = std::max(peak, p[s]);
        }
        for (int64_t s = 0; s < len; ++s) total += p[s] = std::exp(p[s] - peak);
        double p_dot_dp = 0, p_abs_dp = 0;
        for (int64_t s = 0; s < len; ++s) {
          p[s] /= total;
          g.probs[((b * H + h) * d.n + t) * S + s] = p[s];
          for (int64_t i = 0; i < D; ++i) dP[s] += double(dout[row + i]) * v[kv + s * D + i];
          p_dot_dp += p[s] * dP[s];
          p_abs_dp += p[s] * std::fabs(dP[s]);
        }
        for (int64_t s = 0; s < len; ++s) {
          const double dS = p[s] * (dP[s] - p_dot_dp) * scale;
          const double dS_size = p[s] * (std::fabs(dP[s]) + p_abs_dp) * scale;
          for (int64_t i = 0; i < D; ++i) {
            g.dq[row + i] += dS * k[kv + s * D + i];
            g.dq_size[row + i] += dS_size * std::fabs(k[kv + s * D + i]);
            g.dk[kv + s * D + i] += dS * q[row + i];
            g.dk_size[kv + s * D + i] += dS_size * std::fabs(q[row + i]);
            g.dv[kv + s * D + i] += p[s] * dout[row + i];
            g.dv_size[kv + s * D + i] += p[s] * std::fabs(dout[row + i]);
          }
        }
      }
  return g;
}

TEST(Attention, ForwardAndBackwardOnBothSidesOfTheThreadThreshold) {
  // Work B·H·n·S·D: 2·4·4·7·6 against 2·4·16·24·16.
  AttentionDims big = gqa_dims(8, 24);
  big.n = 16;
  big.head_dim = 16;
  for (const AttentionDims d : {gqa_dims(3, 7), big}) {
    SCOPED_TRACE(::testing::Message() << "n=" << d.n << " D=" << d.head_dim);
    const int64_t work = d.batch * d.heads * d.n * d.keys() * d.head_dim;
    ASSERT_EQ(work >= kMinParallelWork, d.n == 16);
    const int64_t q_size = d.batch * d.n * d.heads * d.head_dim;
    const int64_t kv_size = d.batch * d.kv_heads * d.kv_capacity * d.head_dim;
    const std::vector<float> q = random_vector(q_size, 40), k = random_vector(kv_size, 41),
                             v = random_vector(kv_size, 42), dout = random_vector(q_size, 43);
    const std::vector<double> want = reference_attention(q, k, v, d);
    const AttentionGrads grads = reference_attention_backward(dout, q, k, v, d);

    std::vector<float> kept(q_size), scratch(q_size), probs(grads.probs.size());
    std::vector<float> scratch_probs(d.batch * d.heads * d.kv_capacity);
    attention_forward(kept.data(), probs.data(), q.data(), k.data(), v.data(), d, true);
    attention_forward(scratch.data(), scratch_probs.data(), q.data(), k.data(), v.data(), d, false);
    // Scores carry about D roundings of Σ|q·k|/sqrt(D) (a few units here), which the softmax
    // turns into relative errors of the probabilities: 64u is well above them.
    EXPECT_TRUE(
        test::all_close(probs.data(), grads.probs.data(), int64_t(probs.size()), 1e-12, 64 * kU));
    EXPECT_TRUE(test::all_close(kept.data(), want.data(), q_size, 64 * kU, 64 * kU)) << "kept";
    EXPECT_TRUE(test::all_close(scratch.data(), want.data(), q_size, 64 * kU, 64 * kU))
        << "scratch";

    std::vector<float> dq(q_size), dk(kv_size, 5.0f), dv(kv_size, 5.0f);  // overwritten
    attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(),
                       probs.data(), d);
    auto bound = [](const std::vector<double>& size) {
      return [&size](int64_t i) { return 1e-12 + 128 * kU * size[size_t(i)]; };
    };
    EXPECT_TRUE(test::all_within(dq.data(), grads.dq.data(), q_size, bound(grads.dq_size)));
    EXPECT_TRUE(test::all_within(dk.data(), grads.dk.data(), kv_size, bound(grads.dk_size)));
    EXPECT_TRUE(test::all_within(dv.data(), grads.dv.data(), kv_size, bound(grads.dv_size)));
  }
}

}  // namespace
}  // namespace bd
