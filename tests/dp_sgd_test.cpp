// DP-SGD's pieces: per-example gradient norms and the clipped sum (ghost / book-keeping and
// Opacus-style materialised) against each example's gradient from its own backward pass (the
// backward that tests/llama_grad_test.cpp checks by finite differences and
// tests/train_torch_parity_test.cpp against PyTorch); the Poisson sampler and the Gaussian noise
// against their distributions; micro-batching and activation reuse.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>

#include "core/threads.h"
#include "model/llama.h"
#include "model/llama_params.h"
#include "test_util.h"
#include "train/dp_random.h"
#include "train/grad_clip.h"
#include "train/per_example_clip.h"
#include "train/trainer.h"

namespace bd {
namespace {

const std::string kEmbedding = "model.embed_tokens.weight";

LlamaConfig small_config(bool tied) {
  return test::llama_config({.vocab = 13,
                             .hidden = 16,
                             .intermediate = 24,
                             .layers = 2,
                             .heads = 4,
                             .kv_heads = 2,
                             .head_dim = 4,
                             .rms_norm_eps = 1e-5,
                             .rope_theta = 100.0,
                             .tied = tied});
}

// B windows of T tokens from a small vocabulary, so tokens repeat within a window (the
// embedding's per-example gradient then sums rows).
std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int32_t& token : tokens) token = int32_t(rng() % uint64_t(vocab));
  return tokens;
}

struct Reference {
  std::vector<double> norms;              // ‖g_i‖ over the trainable tensors
  std::vector<std::vector<float>> grads;  // g_i, frozen tensors zeroed
};

// Each example's gradient from a forward and backward over that example alone (the mean loss of
// its T tokens), frozen tensors zeroed.
Reference per_example_reference(const LlamaParams& params, const std::vector<int32_t>& inputs,
                                const std::vector<int32_t>& targets, int64_t B, int64_t T,
                                const std::set<std::string>& frozen) {
  const LlamaWeights weights = params.weights();
  TrainActivations acts(params.config(), 1, T);
  Reference reference;
  for (int64_t i = 0; i < B; ++i) {
    LlamaParams grads(params.config());
    forward_train(weights, inputs.data() + i * T, targets.data() + i * T, 1, T, acts);
    backward(weights, acts, grads);
    for (const ParamSlice& slice : grads.slices())
      if (frozen.count(slice.name)) std::fill_n(grads.data() + slice.offset, slice.numel, 0.0f);
    reference.norms.push_back(l2_norm(grads.data(), grads.size()));
    reference.grads.emplace_back(grads.data(), grads.data() + grads.size());
  }
  return reference;
}

struct ClipCase {
  bool tied;
  bool freeze_embeddings;
  int64_t T;  // 6: every linear by Gram matrices; 20: the small ones materialised
  PerExampleMethod method;
};

class PerExampleClip : public ::testing::TestWithParam<ClipCase> {};

TEST_P(PerExampleClip, NormsAndClippedSumMatchOneBackwardPerExample) {
  const ClipCase c = GetParam();
  const LlamaConfig config = small_config(c.tied);
  const LlamaParams params = test::random_llama_params(config, 5, 0.3f, 0.2f);
  const int64_t B = 5, T = c.T;
  const std::vector<int32_t> inputs = random_tokens(B * T, config.vocab_size, 11);
  const std::vector<int32_t> targets = random_tokens(B * T, config.vocab_size, 12);
  std::set<std::string> frozen;
  if (c.freeze_embeddings) frozen.insert(kEmbedding);
  const Reference reference = per_example_reference(params, inputs, targets, B, T, frozen);

  // C between the norms, so that some examples are clipped and some are not.
  std::vector<double> sorted = reference.norms;
  std::sort(sorted.begin(), sorted.end());
  const double max_norm = (sorted[1] + sorted[2]) / 2;
  std::vector<float> expected(params.size(), 0.0f);
  int64_t expected_clipped = 0;
  for (int64_t i = 0; i < B; ++i) {
    const double factor = std::min(1.0, max_norm / (reference.norms[size_t(i)] + 1e-6));
    expected_clipped += factor < 1;
    for (size_t j = 0; j < expected.size(); ++j)
      expected[j] += float(factor * reference.grads[size_t(i)][j]);
  }

  // One batch of B (acts sized for more, as the trainer's are), the sum added to what was there.
  const LlamaWeights weights = params.weights();
  TrainActivations acts(config, B + 2, T);
  acts.set_batch(B);
  forward_train(weights, inputs.data(), targets.data(), B, T, acts);
  PerExampleClipper clipper(config, frozen, B + 2, T, c.method);
  LlamaParams grads(config);
  std::fill_n(grads.data(), grads.size(), 0.5f);
  const ClipStats stats = clipper.clip_and_accumulate(weights, acts, max_norm, grads);

  ASSERT_EQ(stats.norms.size(), size_t(B));
  for (int64_t i = 0; i < B; ++i)
    EXPECT_NEAR(stats.norms[size_t(i)], reference.norms[size_t(i)],
                1e-5 * reference.norms[size_t(i)])
        << "example " << i;
  EXPECT_EQ(stats.clipped, expected_clipped);
  EXPECT_GT(stats.clipped, 0);
  EXPECT_LT(stats.clipped, B);
  for (float& value : expected) value += 0.5f;
  EXPECT_LT(test::max_relative_error(grads.data(), expected.data(), int64_t(expected.size())),
            1e-5);
  for (const ParamSlice& slice : grads.slices()) {  // frozen tensors untouched
    if (!frozen.count(slice.name)) continue;
    for (size_t j = 0; j < slice.numel; ++j) ASSERT_EQ(grads.data()[slice.offset + j], 0.5f);
  }
}

std::string case_name(const ::testing::TestParamInfo<ClipCase>& info) {
  const ClipCase& c = info.param;
  return std::string(c.tied ? "Tied" : "Untied") + (c.freeze_embeddings ? "Frozen" : "Trained") +
         "T" + std::to_string(c.T) +
         (c.method == PerExampleMethod::ghost ? "Ghost" : "Materialized");
}

std::vector<ClipCase> clip_cases() {
  std::vector<ClipCase> cases;
  for (bool tied : {false, true})
    for (bool freeze : {false, true})
      for (int64_t T : {6, 20})
        for (PerExampleMethod method : {PerExampleMethod::ghost, PerExampleMethod::materialized})
          cases.push_back({tied, freeze, T, method});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, PerExampleClip, ::testing::ValuesIn(clip_cases()), case_name);

TEST(PerExampleClip, RefusesOtherShapesAndUncountedTargets) {
  const LlamaConfig config = small_config(false);
  const LlamaParams params = test::random_llama_params(config, 5, 0.3f, 0.2f);
  const LlamaWeights weights = params.weights();
  LlamaParams grads(config);
  PerExampleClipper clipper(config, {}, 2, 4, PerExampleMethod::ghost);
  std::vector<int32_t> tokens = random_tokens(12, config.vocab_size, 1);
  TrainActivations wider(config, 3, 4);
  forward_train(weights, tokens.data(), tokens.data(), 3, 4, wider);
  test::expect_error([&] { clipper.clip_and_accumulate(weights, wider, 1.0, grads); },
                     {"sized for 2 windows of 4 tokens", "got 3 of 4"});
  TrainActivations acts(config, 2, 4);
  std::vector<int32_t> targets(tokens.begin(), tokens.begin() + 8);
  targets[3] = -1;
  forward_train(weights, tokens.data(), targets.data(), 2, 4, acts);
  test::expect_error([&] { clipper.clip_and_accumulate(weights, acts, 1.0, grads); },
                     {"every target counted", "7 of 8"});
}

TEST(TrainActivations, ASmallerBatchRunsInTheSameBuffers) {
  const LlamaConfig config = small_config(true);
  const LlamaParams params = test::random_llama_params(config, 3, 0.3f, 0.2f);
  const LlamaWeights weights = params.weights();
  const std::vector<int32_t> tokens = random_tokens(4 * 6, config.vocab_size, 2);
  TrainActivations exact(config, 2, 6), roomy(config, 4, 6);
  const float* memory = roomy.memory.data();
  forward_train(weights, tokens.data(), tokens.data(), 4, 6, roomy);  // the buffers hold data
  roomy.set_batch(2);
  const float loss_exact = forward_train(weights, tokens.data(), tokens.data(), 2, 6, exact);
  const float loss_roomy = forward_train(weights, tokens.data(), tokens.data(), 2, 6, roomy);
  EXPECT_EQ(loss_exact, loss_roomy);
  EXPECT_EQ(roomy.memory.data(), memory);
  test::expect_error([&] { roomy.set_batch(5); }, {"up to 4 sequences", "asked for 5"});
}

TEST(DpRandom, PoissonSampleHasTheBinomialLaw) {
  DpRandom random(7);
  const int64_t n = 1000, draws = 2000;
  const double q = 0.1;
  std::vector<int64_t> included(size_t(n), 0);
  double sum = 0, sum2 = 0;
  for (int64_t d = 0; d < draws; ++d) {
    const std::vector<int64_t> sample = random.poisson_sample(n, q);
    ASSERT_TRUE(std::is_sorted(sample.begin(), sample.end()));
    for (int64_t id : sample) ++included[size_t(id)];
    sum += double(sample.size());
    sum2 += double(sample.size()) * double(sample.size());
  }
  // Batch size ~ Binomial(n, q): mean nq = 100 (± 5 standard errors), variance nq(1-q) = 90.
  const double mean = sum / draws, variance = sum2 / draws - mean * mean;
  EXPECT_NEAR(mean, n * q, 5 * std::sqrt(n * q * (1 - q) / draws));
  EXPECT_NEAR(variance, n * q * (1 - q), 0.2 * n * q * (1 - q));
  // Each example in ~ Binomial(draws, q) = 200 ± 13.4 steps; all within 5 standard deviations.
  const double sd = std::sqrt(draws * q * (1 - q));
  for (int64_t count : included) EXPECT_NEAR(double(count), draws * q, 5 * sd);
  EXPECT_TRUE(random.poisson_sample(50, 0.0).empty());
  EXPECT_EQ(random.poisson_sample(50, 1.0).size(), 50u);
  test::expect_error([&] { random.poisson_sample(5, 1.5); }, {"sample rate", "[0, 1]"});
}

TEST(DpRandom, GaussianNoiseHasTheNormalLaw) {
  DpRandom random(3);
  const size_t n = size_t(1) << 20;
  const double stddev = 2.5;
  std::vector<float> x(n, 1.0f);
  random.add_gaussian(x.data(), n, stddev);
  double sum = 0, sum2 = 0, sum4 = 0;
  int64_t within_one = 0;
  for (float value : x) {
    const double z = (double(value) - 1.0) / stddev;
    sum += z;
    sum2 += z * z;
    sum4 += z * z * z * z;
    within_one += std::abs(z) < 1;
  }
  const double N = double(n);
  EXPECT_NEAR(sum / N, 0.0, 5 / std::sqrt(N));                                  // mean 0
  EXPECT_NEAR(sum2 / N, 1.0, 5 * std::sqrt(2 / N));                             // variance 1
  EXPECT_NEAR(sum4 / N, 3.0, 5 * std::sqrt(96 / N));                            // kurtosis 3
  EXPECT_NEAR(double(within_one) / N, 0.682689492, 5 * std::sqrt(0.2166 / N));  // P(|z| < 1)
  test::expect_error([&] { random.add_gaussian(x.data(), n, -1); }, {"standard deviation"});
}

TEST(DpRandom, SeedsReproduceWhateverTheThreadsAndSecretKeysDoNot) {
  const size_t n = 100003;  // several chunks and an odd tail
  auto noise = [&](DpRandom& random, int threads) {
    set_threads(threads);
    std::vector<float> x(n, 0.0f);
    random.add_gaussian(x.data(), n, 1.0);
    set_threads(0);
    return x;
  };
  DpRandom a(42), b(42), c(43), secret1, secret2;
  EXPECT_FALSE(a.secret());
  EXPECT_TRUE(secret1.secret());
  EXPECT_EQ(noise(a, 1), noise(b, 2));
  EXPECT_NE(noise(a, 2), noise(c, 2));
  EXPECT_NE(noise(secret1, 2), noise(secret2, 2));
  // Each call draws fresh values; the k-th call of two generators with one seed agree.
  EXPECT_NE(noise(a, 2), noise(a, 2));  // a's calls 3 and 4
  DpRandom fresh(42);
  EXPECT_NE(noise(b, 2), noise(fresh, 1)) << "b's second call repeats a first call";
  noise(b, 1);
  noise(b, 1);
  EXPECT_EQ(a.poisson_sample(1000, 0.3), b.poisson_sample(1000, 0.3));  // both call 5
}

// A private step splits its windows into forward passes of options.batch; the result must not
// depend on the split.
TEST(PrivateStep, MicroBatchesGiveTheSameUpdate) {
  const LlamaConfig config = small_config(true);
  const std::vector<int32_t> tokens = random_tokens(40 * 7, config.vocab_size, 9);
  const std::vector<int64_t> windows = {0, 3, 4, 7, 11, 20, 21, 39};
  auto one_step = [&](int64_t batch) {
    LlamaParams params = test::random_llama_params(config, 8, 0.3f, 0.2f);
    TrainOptions options;
    options.steps = 1;
    options.batch = batch;
    options.seq = 6;
    options.adamw.weight_decay = 0;
    options.dp =
        DpOptions{.noise_multiplier = 0, .max_grad_norm = 0.5, .sample_rate = 0.2, .seed = 1};
    Trainer trainer(params, options);
    const StepStats stats = trainer.private_step(tokens, windows);
    EXPECT_EQ(stats.examples, 8);
    return std::vector<float>(params.data(), params.data() + params.size());
  };
  const std::vector<float> whole = one_step(8), split = one_step(3);
  EXPECT_LT(test::max_abs_difference(whole.data(), split.data(), int64_t(whole.size())), 1e-6);
}

TEST(PrivateStep, RefusesInvalidOptions) {
  const LlamaConfig config = small_config(false);
  LlamaParams params(config);
  auto options_with = [](DpOptions dp) {
    TrainOptions options;
    options.dp = dp;
    return options;
  };
  DpOptions noisy;
  noisy.noise_multiplier = -1;
  noisy.sample_rate = 0.1;
  test::expect_error([&] { Trainer(params, options_with(noisy)); }, {"noise multiplier"});
  DpOptions unclipped;
  unclipped.max_grad_norm = 0;
  unclipped.sample_rate = 0.1;
  test::expect_error([&] { Trainer(params, options_with(unclipped)); }, {"clipping norm"});
  test::expect_error([&] { Trainer(params, options_with(DpOptions{})); }, {"sample rate"});
}

}  // namespace
}  // namespace bd
