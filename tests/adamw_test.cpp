// AdamW and gradient clipping: hand-computed steps, then a run against torch.optim.AdamW +
// clip_grad_norm_ + LambdaLR (tests/reference/train_ref.py) on random tensors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/parallel.h"
#include "test_util.h"
#include "train/adamw.h"
#include "train/grad_clip.h"
#include "train/lr_schedule.h"

namespace bd {
namespace {

// β1 0.9, β2 0.999, eps 1e-8, lr 0.1, wd 0.01 on p = 1 with gradients 0.5, -1, 0.25; the
// expected values were worked through the update rule by hand (in double).
TEST(AdamW, MatchesHandComputedSteps) {
  AdamW optimizer(1, AdamWConfig{0.9f, 0.999f, 1e-8f, 0.01f});
  float param = 1.0f;
  const float grads[] = {0.5f, -1.0f, 0.25f};
  const double expected[] = {0.899000002, 0.934711354, 0.947445709};
  for (int t = 0; t < 3; ++t) {
    optimizer.step(&param, &grads[t], 0.1f);
    EXPECT_NEAR(param, expected[t], 1e-6) << "step " << t + 1;
  }
  EXPECT_EQ(optimizer.steps(), 3);
}

// The first step moves every parameter by -lr·g/(|g| + eps) ≈ -lr·sign(g), whatever |g| is.
TEST(AdamW, FirstStepIsSignTimesLr) {
  AdamW optimizer(4, AdamWConfig{0.9f, 0.95f, 1e-8f, 0.0f});
  std::vector<float> params = {0, 0, 0, 0};
  const std::vector<float> grads = {1e-3f, -5.0f, 123.0f, -1e-2f};
  optimizer.step(params.data(), grads.data(), 0.01f);
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(params[i], -0.01 * grads[i] / (std::abs(grads[i]) + 1e-8), 2e-8) << i;
}

// With zero gradients only the decoupled decay acts: p ← p·(1 - lr·wd), and not on segments
// that opt out of decay.
TEST(AdamW, DecayIsDecoupledAndPerSegment) {
  AdamW optimizer(4, AdamWConfig{0.9f, 0.95f, 1e-8f, 0.5f}, {{0, 2, true}, {2, 2, false}});
  std::vector<float> params = {2, -4, 2, -4};
  const std::vector<float> zeros(4, 0.0f);
  for (int t = 0; t < 3; ++t) optimizer.step(params.data(), zeros.data(), 0.1f);
  const float keep = std::pow(1.0f - 0.1f * 0.5f, 3.0f);
  EXPECT_NEAR(params[0], 2 * keep, 1e-6);
  EXPECT_NEAR(params[1], -4 * keep, 1e-6);
  EXPECT_EQ(params[2], 2.0f);
  EXPECT_EQ(params[3], -4.0f);
}

// A frozen segment keeps its values exactly, whatever its gradient and decay setting.
TEST(AdamW, FrozenSegmentsAreNeverUpdated) {
  AdamW optimizer(4, AdamWConfig{0.9f, 0.95f, 1e-8f, 0.5f},
                  {{0, 2, true, false}, {2, 2, true, true}});
  std::vector<float> params = {2, -4, 2, -4};
  const std::vector<float> grads = {1, 1, 1, 1};
  for (int t = 0; t < 3; ++t) optimizer.step(params.data(), grads.data(), 0.1f);
  EXPECT_NE(params[0], 2.0f);
  EXPECT_NE(params[1], -4.0f);
  EXPECT_EQ(params[2], 2.0f);
  EXPECT_EQ(params[3], -4.0f);
}

TEST(AdamW, RejectsBadSegmentsAndHyperParameters) {
  EXPECT_THROW(AdamW(4, AdamWConfig{}, {{0, 2, true}}), Error);                 // short
  EXPECT_THROW(AdamW(4, AdamWConfig{}, {{0, 2, true}, {1, 3, false}}), Error);  // overlap
  EXPECT_THROW(AdamW(4, AdamWConfig{1.0f, 0.9f, 1e-8f, 0.0f}), Error);
  EXPECT_THROW(AdamW(4, AdamWConfig{0.9f, 0.9f, 0.0f, 0.0f}), Error);
  EXPECT_THROW(AdamW(4, AdamWConfig{0.9f, 0.9f, 1e-8f, -1.0f}), Error);
}

TEST(GradClip, ScalesToMaxNormAndReportsTheNormBefore) {
  std::vector<float> grads = {3, 4};
  EXPECT_DOUBLE_EQ(clip_grad_norm(grads.data(), 2, 1.0), 5.0);
  // PyTorch's coefficient: max_norm / (norm + 1e-6).
  EXPECT_NEAR(grads[0], 3.0 / (5.0 + 1e-6), 1e-7);
  EXPECT_NEAR(grads[1], 4.0 / (5.0 + 1e-6), 1e-7);
  EXPECT_NEAR(l2_norm(grads.data(), 2), 1.0, 1e-6);
}

TEST(GradClip, LeavesSmallGradientsAndDisabledClippingAlone) {
  std::vector<float> grads = {0.3f, -0.4f};
  EXPECT_NEAR(clip_grad_norm(grads.data(), 2, 1.0), 0.5, 1e-7);
  EXPECT_EQ(grads[0], 0.3f);
  std::vector<float> big = {30, 40};
  EXPECT_DOUBLE_EQ(clip_grad_norm(big.data(), 2, 0.0), 50.0);
  EXPECT_EQ(big[1], 40.0f);
}

// Four tensors (three decayed matrices, one vector without decay), 30 steps of random gradients
// whose scale varies so clipping is active on some steps and not on others. The 181 × 190 matrix
// is above kMinParallelWork, so AdamW updates it on threads, and so are the gradients as a whole,
// so the norm and the clipping run on threads too; the other tensors are updated by one thread
// (the hand-computed tests above cover the single-threaded norm and clipping).
TEST(AdamW, MatchesTorchAdamWWithClippingAndSchedule) {
  const test::ScratchDir scratch;
  const std::vector<std::vector<int64_t>> shapes = {{7, 13}, {13}, {5, 3}, {181, 190}};
  const std::vector<bool> decay = {true, false, true, true};
  static_assert(181 * 190 >= kMinParallelWork && 7 * 13 < kMinParallelWork);
  const int steps = 30;
  const LrSchedule schedule{3e-2, 5, steps, 0.1};
  const AdamWConfig config{0.9f, 0.95f, 1e-8f, 0.1f};
  // Gradient norms are about 186 on the large steps and 9 on the small ones.
  const double max_norm = 20.0;

  std::vector<ParamSegment> segments;
  size_t total = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    size_t size = 1;
    for (int64_t d : shapes[i]) size *= size_t(d);
    segments.push_back({total, size, decay[i]});
    total += size;
  }
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> params(total), grads(total * steps);
  for (float& p : params) p = normal(rng);
  for (int t = 0; t < steps; ++t)
    for (size_t i = 0; i < total; ++i)
      grads[t * total + i] = normal(rng) * (t % 3 == 0 ? 1.0f : 0.05f);
  test::write_values(scratch / "params0.f32", params);
  test::write_values(scratch / "grads.f32", grads);
  nlohmann::json spec = test::train_ref_optimizer_spec(schedule, config, max_norm);
  spec["shapes"] = shapes;
  spec["decay"] = decay;
  scratch.write("spec.json", spec.dump());
  const test::CommandResult torch =
      test::run_reference("train_ref.py", "adamw " + scratch.path(), scratch);
  ASSERT_EQ(torch.exit_code, 0) << torch.err;
  const std::vector<float> torch_params = test::read_values<float>(scratch / "params.f32");
  const std::vector<float> torch_norms = test::read_values<float>(scratch / "norms.f32");
  ASSERT_EQ(torch_params.size(), total * steps);
  ASSERT_EQ(torch_norms.size(), size_t(steps));

  AdamW optimizer(total, config, segments);
  double max_param_error = 0, max_norm_error = 0;
  int clipped_steps = 0;
  for (int t = 0; t < steps; ++t) {
    std::vector<float> step_grads(grads.begin() + t * total, grads.begin() + (t + 1) * total);
    const double norm = clip_grad_norm(step_grads.data(), total, max_norm);
    clipped_steps += norm > max_norm;
    max_norm_error = std::max(max_norm_error, std::abs(norm - torch_norms[t]) / torch_norms[t]);
    optimizer.step(params.data(), step_grads.data(), float(schedule.lr_at(t)));
    // Per parameter (each is updated on its own): |ours − torch| / max(1, |torch|).
    const float* theirs = torch_params.data() + t * total;
    const test::ElementwiseError error = test::elementwise_error(
        params.data(), theirs, int64_t(total),
        [&](int64_t i) { return std::max(1.0, double(std::abs(theirs[i]))); });
    max_param_error = std::max(max_param_error, error.worst);
  }
  std::printf(
      "AdamW vs torch over %d steps (%d clipped): max param error %.3g, max norm error %.3g\n",
      steps, clipped_steps, max_param_error, max_norm_error);
  EXPECT_GT(clipped_steps, 0);
  EXPECT_LT(clipped_steps, steps);
  EXPECT_LT(max_param_error, 2e-6);
  // Torch sums the 34k squares in F32 (we sum in double): its norms are off by up to ~1e-6.
  EXPECT_LT(max_norm_error, 2e-6);
}

}  // namespace
}  // namespace bd
