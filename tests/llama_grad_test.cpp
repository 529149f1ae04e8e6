// Whole-model finite-difference check of the hand-written backward pass: every parameter of a
// tiny random Llama (2 layers, GQA, head_dim != hidden/heads, untied and tied head, ignored
// targets) against central differences of the F32 training loss. Also checks the
// LinearBackwardObserver contract: it sees every linear once, and Σ_rows dYᵀ·X of what it sees
// is exactly that weight's gradient (what DP-SGD and delta-scale gradients build on).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "model/llama.h"
#include "model/llama_params.h"
#include "test_util.h"

namespace bd {
namespace {

LlamaConfig tiny_config(bool tied) {
  return test::llama_config({.vocab = 11,
                             .hidden = 8,
                             .intermediate = 12,
                             .layers = 2,
                             .heads = 4,
                             .kv_heads = 2,
                             .head_dim = 4,  // hidden / heads would be 2
                             .rms_norm_eps = 1e-5,
                             .rope_theta = 100.0,  // visible rotation within a few positions
                             .tied = tied});
}

// Weights large enough that every layer is far from linear (std 0.3), norms around 1.
LlamaParams random_params(const LlamaConfig& config, uint64_t seed) {
  return test::random_llama_params(config, seed, 0.3f, 0.2f);
}

struct Batch {
  int64_t B = 2, T = 5;
  std::vector<int32_t> tokens = {1, 4, 10, 0, 7, 3, 3, 9, 2, 5};
  std::vector<int32_t> targets = {4, 10, 0, 7, -1, 3, 9, -1, 5, 6};
};

class LlamaGrad : public ::testing::TestWithParam<bool> {};

TEST_P(LlamaGrad, EveryParameterMatchesFiniteDifferences) {
  const LlamaConfig config = tiny_config(GetParam());
  LlamaParams params = random_params(config, 42);  // perturbed below
  LlamaParams grads(config);
  const Batch batch;
  TrainActivations acts(config, batch.B, batch.T);
  const LlamaWeights weights = params.weights();
  const float loss =
      forward_train(weights, batch.tokens.data(), batch.targets.data(), batch.B, batch.T, acts);
  EXPECT_EQ(acts.counted, 8);
  EXPECT_GT(loss, 0.5f);
  backward(weights, acts, grads);

  // Central differences in F32 with ε = 5e-3: about 1e-5 of noise (the loss's F32 rounding
  // over ε) plus O(ε²) truncation, against gradients of order 0.1 - 1.
  const float eps = 5e-3f;
  std::vector<double> numeric(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const float saved = params.data()[i];
    params.data()[i] = saved + eps;
    const double plus =
        forward_train(weights, batch.tokens.data(), batch.targets.data(), batch.B, batch.T, acts);
    params.data()[i] = saved - eps;
    const double minus =
        forward_train(weights, batch.tokens.data(), batch.targets.data(), batch.B, batch.T, acts);
    params.data()[i] = saved;
    numeric[i] = (plus - minus) / (2.0 * eps);
  }
  double max_grad = 0;
  for (double g : numeric) max_grad = std::max(max_grad, std::abs(g));
  ASSERT_GT(max_grad, 0.05);
  double worst = 0;
  std::string worst_name;
  for (const ParamSlice& slice : params.slices()) {
    double max_diff = 0, slice_max = 0;
    for (size_t i = slice.offset; i < slice.offset + slice.numel; ++i) {
      max_diff = std::max(max_diff, std::abs(double(grads.data()[i]) - numeric[i]));
      slice_max = std::max(slice_max, std::abs(numeric[i]));
    }
    // Every tensor gets a real gradient, and it matches to 1% of its own largest entry.
    EXPECT_GT(slice_max, 1e-3) << slice.name;
    EXPECT_LT(max_diff, 1e-2 * slice_max) << slice.name;
    if (max_diff / slice_max > worst)
      std::tie(worst, worst_name) = std::pair(max_diff / slice_max, slice.name);
  }
  std::printf("worst per-tensor relative error %.2e (%s)\n", worst, worst_name.c_str());
}

INSTANTIATE_TEST_SUITE_P(UntiedAndTied, LlamaGrad, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "tied" : "untied"; });

// Accumulates Σ_rows dYᵀ·X per weight from what the observer is shown.
struct OuterProductObserver : LinearBackwardObserver {
  std::map<std::string, std::vector<double>> sums;
  std::map<std::string, int> calls;
  void on_linear(const std::string& name, const float* X, const float* dY, int64_t rows, int64_t in,
                 int64_t out) override {
    ++calls[name];
    std::vector<double>& sum = sums[name];
    sum.assign(size_t(out * in), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) sum[o * in + i] += double(dY[r * out + o]) * X[r * in + i];
  }
};

TEST(LlamaBackward, ObserverSeesEveryLinearWithItsInputAndOutputGradient) {
  const LlamaConfig config = tiny_config(false);
  const LlamaParams params = random_params(config, 7);
  LlamaParams grads(config);
  const Batch batch;
  TrainActivations acts(config, batch.B, batch.T);
  const LlamaWeights weights = params.weights();
  forward_train(weights, batch.tokens.data(), batch.targets.data(), batch.B, batch.T, acts);
  OuterProductObserver observer;
  backward(weights, acts, grads, &observer);

  EXPECT_EQ(observer.calls.size(), size_t(7 * config.num_hidden_layers + 1));
  for (const auto& [name, count] : observer.calls) {
    EXPECT_EQ(count, 1) << name;
    const float* grad = grads.find(name);
    ASSERT_NE(grad, nullptr) << name;
    const std::vector<double>& sum = observer.sums[name];
    for (size_t i = 0; i < sum.size(); ++i) EXPECT_NEAR(grad[i], sum[i], 1e-5) << name;
  }
  EXPECT_EQ(observer.calls.count("lm_head.weight"), 1u);
  EXPECT_EQ(observer.calls.count("model.layers.1.mlp.down_proj.weight"), 1u);
}

TEST(LlamaBackward, AccumulatesIntoGradients) {
  const LlamaConfig config = tiny_config(true);
  const LlamaParams params = random_params(config, 8);
  LlamaParams once(config), twice(config);
  const Batch batch;
  TrainActivations acts(config, batch.B, batch.T);
  const LlamaWeights weights = params.weights();
  for (LlamaParams* grads : {&once, &twice, &twice}) {
    forward_train(weights, batch.tokens.data(), batch.targets.data(), batch.B, batch.T, acts);
    backward(weights, acts, *grads);
  }
  for (size_t i = 0; i < once.size(); ++i)
    EXPECT_NEAR(twice.data()[i], 2 * once.data()[i], 1e-6 + 1e-5 * std::abs(once.data()[i]));
}

TEST(LlamaBackward, RejectsMismatchedBuffers) {
  const LlamaConfig config = tiny_config(false);
  const LlamaParams params = random_params(config, 9);
  const Batch batch;
  TrainActivations acts(config, batch.B, batch.T);
  EXPECT_THROW(
      forward_train(params.weights(), batch.tokens.data(), batch.targets.data(), 1, batch.T, acts),
      Error);
  LlamaParams other_grads(tiny_config(true));
  forward_train(params.weights(), batch.tokens.data(), batch.targets.data(), batch.B, batch.T,
                acts);
  EXPECT_THROW(backward(params.weights(), acts, other_grads), Error);
}

}  // namespace
}  // namespace bd
