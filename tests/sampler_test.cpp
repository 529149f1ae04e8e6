// Sampling: greedy is argmax, top-k / top-p restrict the support to the right tokens, a seed
// fixes the draws, and empirical frequencies match the renormalised softmax(logits / T)
// (Pearson chi-square against the exact probabilities computed here in double).
#include "model/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"

namespace bd {
namespace {

// Exact target distribution: softmax(logits / T) restricted to `support`, renormalised.
std::vector<double> expected_probs(const std::vector<float>& logits, double temperature,
                                   const std::vector<int>& support) {
  std::vector<double> p(logits.size(), 0.0);
  double total = 0;
  for (int i : support) total += p[i] = std::exp(logits[i] / temperature);
  for (double& v : p) v /= total;
  return p;
}

// Pearson chi-square statistic of `draws` samples against p; samples outside p's support fail.
double chi_square(Sampler& sampler, const std::vector<float>& logits, const std::vector<double>& p,
                  int draws) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[sampler.sample(logits.data(), int64_t(logits.size()))];
  double stat = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " is outside the support";
      continue;
    }
    const double expected = p[i] * draws;
    stat += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return stat;
}

const std::vector<float> kLogits = {1.0f, -0.5f, 2.0f, 0.3f, 1.7f, -2.0f, 0.9f};

TEST(Sampler, GreedyIsArgmax) {
  Sampler greedy({.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 1});
  EXPECT_EQ(greedy.sample(kLogits.data(), 7), 2);
  const std::vector<float> tie = {0.5f, 3.0f, 3.0f};
  EXPECT_EQ(greedy.sample(tie.data(), 3), 1);  // first of equal maxima
  EXPECT_EQ(argmax(kLogits.data(), 7), 2);
}

// Chi-square thresholds are the 0.9999 quantiles for the degrees of freedom (support - 1), so a
// correct sampler fails with probability 1e-4 per seed; the seeds are fixed.
TEST(Sampler, FrequenciesMatchTemperatureSoftmax) {
  for (float temperature : {0.5f, 1.0f, 2.0f}) {
    Sampler sampler({.temperature = temperature, .top_k = 0, .top_p = 1.0f, .seed = 3});
    const auto p = expected_probs(kLogits, temperature, {0, 1, 2, 3, 4, 5, 6});
    EXPECT_LT(chi_square(sampler, kLogits, p, 40000), 27.9) << "T=" << temperature;  // 6 dof
  }
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  Sampler sampler({.temperature = 1.0f, .top_k = 3, .top_p = 1.0f, .seed = 4});
  const auto p = expected_probs(kLogits, 1.0, {2, 4, 0});
  EXPECT_LT(chi_square(sampler, kLogits, p, 30000), 18.4);  // 2 dof
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  // softmax(kLogits) sorted: 2 (.367), 4 (.272), 0 (.135), 6 (.122), 3 (.067), 1 (.030), 5 (.007)
  const auto full = expected_probs(kLogits, 1.0, {0, 1, 2, 3, 4, 5, 6});
  ASSERT_LT(full[2] + full[4], 0.7);
  ASSERT_GT(full[2] + full[4] + full[0], 0.7);
  Sampler sampler({.temperature = 1.0f, .top_k = 0, .top_p = 0.7f, .seed = 5});
  EXPECT_LT(chi_square(sampler, kLogits, expected_probs(kLogits, 1.0, {2, 4, 0}), 30000), 18.4);
  // A p below the top probability keeps only the most likely token.
  Sampler tiny_p({.temperature = 1.0f, .top_k = 0, .top_p = 0.05f, .seed = 6});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(tiny_p.sample(kLogits.data(), 7), 2);
}

TEST(Sampler, TopKThenTopP) {
  // Within the top 4 {2, 4, 0, 6} renormalised, 2 and 4 hold 0.72 < 0.75 and 2, 4, 0 hold more.
  const auto top4 = expected_probs(kLogits, 1.0, {2, 4, 0, 6});
  ASSERT_LT(top4[2] + top4[4], 0.75);
  Sampler sampler({.temperature = 1.0f, .top_k = 4, .top_p = 0.75f, .seed = 7});
  EXPECT_LT(chi_square(sampler, kLogits, expected_probs(kLogits, 1.0, {2, 4, 0}), 30000), 18.4);
}

TEST(Sampler, SameSeedSameSamples) {
  auto draw = [](uint64_t seed) {
    Sampler sampler({.temperature = 1.5f, .top_k = 0, .top_p = 0.95f, .seed = seed});
    std::vector<int32_t> tokens;
    for (int i = 0; i < 64; ++i) tokens.push_back(sampler.sample(kLogits.data(), 7));
    return tokens;
  };
  EXPECT_EQ(draw(9), draw(9));
  EXPECT_NE(draw(9), draw(10));
}

TEST(Sampler, RejectsBadOptions) {
  EXPECT_THROW(Sampler({.temperature = -1.0f}), Error);
  EXPECT_THROW(Sampler({.temperature = NAN}), Error);
  EXPECT_THROW(Sampler({.temperature = 1.0f, .top_k = -2}), Error);
  EXPECT_THROW(Sampler({.temperature = 1.0f, .top_k = 0, .top_p = 0.0f}), Error);
  EXPECT_THROW(Sampler({.temperature = 1.0f, .top_k = 0, .top_p = 1.5f}), Error);
}

}  // namespace
}  // namespace bd
