// Finite-difference checks of every kernel's backward pass, and of the forwards against direct
// double-precision formulas. Each check projects the kernel's output on fixed random weights w
// (L = Σ w·out, accumulated in double) and compares the backward's gradient for dout = w with
// central differences (L(x + ε) - L(x - ε)) / 2ε of the F32 forward. With ε = 5e-3 the
// differences are accurate to about 1e-4 of the largest gradient (F32 rounding over ε, plus
// O(ε²) truncation), so the tolerance is 2e-3 · max|gradient|: a wrong term gives errors of
// order 1.
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

// max |analytic - numeric| / max |numeric| below kTolerance.
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
  linear_backward(dx2.data(), dW2.data(), w.data(), x.data(), linear, rows, true);
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

}  // namespace
}  // namespace bd
