// Training parity with PyTorch: the same initial checkpoint and the same fixed batches go through
// bitdelta's Trainer (hand-written backward, AdamW, schedule, clipping) and through an
// independent float64 torch model with autograd, torch.optim.AdamW, LambdaLR and
// clip_grad_norm_ (tests/reference/train_ref.py). The losses must agree step by step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/llama_params.h"
#include "test_util.h"
#include "train/trainer.h"

namespace bd {
namespace {

struct ParityCase {
  const char* name;
  LlamaConfig config;
  int64_t batch, seq, steps;
};

void PrintTo(const ParityCase& c, std::ostream* out) {
  *out << c.name;
}

// A token stream with structure to learn (a noisy linear recurrence), cut into `steps` batches of
// B random windows of T + 1 tokens: [steps, B, T + 1].
std::vector<int32_t> make_windows(int64_t vocab, int64_t steps, int64_t B, int64_t T) {
  std::mt19937 rng(11);
  std::vector<int32_t> stream(4096);
  stream[0] = 1;
  for (size_t i = 1; i < stream.size(); ++i)
    stream[i] = rng() % 8 == 0 ? int32_t(rng() % vocab) : int32_t((stream[i - 1] * 5 + 3) % vocab);
  std::vector<int32_t> windows;
  for (int64_t n = 0; n < steps * B; ++n) {
    const size_t start = rng() % (stream.size() - size_t(T) - 1);
    windows.insert(windows.end(), stream.begin() + start, stream.begin() + start + T + 1);
  }
  return windows;
}

Batch batch_of(const std::vector<int32_t>& windows, int64_t step, int64_t B, int64_t T) {
  Batch batch{B, T, {}, {}};
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* window = windows.data() + (step * B + b) * (T + 1);
    batch.inputs.insert(batch.inputs.end(), window, window + T);
    batch.targets.insert(batch.targets.end(), window + 1, window + T + 1);
  }
  return batch;
}

class TrainTorchParity : public ::testing::TestWithParam<ParityCase> {};

TEST_P(TrainTorchParity, LossCurveMatchesStepByStep) {
  const ParityCase& c = GetParam();
  const test::ScratchDir scratch;
  const std::string dir = scratch.path();

  LlamaParams params(c.config);
  params.init_random(5);
  save_checkpoint(dir + "/model", c.config, params.named_tensors(), "", {}, false);
  const std::vector<int32_t> windows = make_windows(c.config.vocab_size, c.steps, c.batch, c.seq);
  test::write_values(dir + "/batches.i32", windows);

  TrainOptions options;
  options.steps = c.steps;
  options.batch = c.batch;
  options.seq = c.seq;
  options.lr = 1e-2;
  options.warmup = 2;
  options.min_lr_ratio = 0.1;
  options.adamw = AdamWConfig{0.9f, 0.95f, 1e-8f, 0.1f};
  options.clip = 1.3;  // the gradient norms here run from about 1 to 2: some steps clip
  std::vector<std::string> names;
  for (const ParamSlice& slice : params.slices()) names.push_back(slice.name);
  nlohmann::json spec =
      test::train_ref_optimizer_spec(options.schedule(), options.adamw, options.clip);
  spec["names"] = names;
  spec["batch"] = c.batch;
  spec["seq"] = c.seq;
  scratch.write("spec.json", spec.dump());
  const test::CommandResult torch = test::run_reference("train_ref.py", "train " + dir, scratch);
  ASSERT_EQ(torch.exit_code, 0) << torch.err;
  const std::vector<double> torch_losses = test::read_values<double>(dir + "/losses.f64");
  const std::vector<double> torch_norms = test::read_values<double>(dir + "/norms.f64");
  const std::vector<float> torch_params = test::read_values<float>(dir + "/params.f32");
  ASSERT_EQ(torch_losses.size(), size_t(c.steps));
  ASSERT_EQ(torch_params.size(), params.size());

  Trainer trainer(params, options);
  double max_loss_error = 0, max_norm_error = 0;
  int clipped = 0;
  for (int64_t step = 0; step < c.steps; ++step) {
    const StepStats stats = trainer.step(batch_of(windows, step, c.batch, c.seq));
    const double loss_error = std::abs(stats.loss - torch_losses[step]) / torch_losses[step];
    const double norm_error = std::abs(stats.grad_norm - torch_norms[step]) / torch_norms[step];
    std::printf("  step %lld: loss %.6f (torch %.6f, rel %.2e)  grad norm %.5f (rel %.2e)\n",
                (long long)step + 1, stats.loss, torch_losses[step], loss_error, stats.grad_norm,
                norm_error);
    EXPECT_LE(loss_error, 1e-4) << "step " << step + 1;
    max_loss_error = std::max(max_loss_error, loss_error);
    max_norm_error = std::max(max_norm_error, norm_error);
    clipped += stats.grad_norm > options.clip;
  }
  // The parameters after the last step: per tensor, |ours - torch|₂ / |torch|₂. (Elementwise
  // errors are larger: Adam divides each coordinate by its own gradient scale, so coordinates
  // whose gradient is near zero turn F32 rounding into visible, but harmless, differences.)
  double max_param_error = 0;
  for (const ParamSlice& slice : params.slices()) {
    const float* ours = params.data() + slice.offset;
    const float* theirs = torch_params.data() + slice.offset;
    double diff2 = 0, norm2 = 0;
    for (size_t i = 0; i < slice.numel; ++i) {
      diff2 += (double(ours[i]) - theirs[i]) * (double(ours[i]) - theirs[i]);
      norm2 += double(theirs[i]) * theirs[i];
    }
    max_param_error = std::max(max_param_error, std::sqrt(diff2 / norm2));
  }
  std::printf(
      "%s: %lld steps (%d clipped), max rel loss error %.2e, max rel grad-norm error "
      "%.2e, max param error %.2e; loss %.4f -> %.4f\n",
      c.name, (long long)c.steps, clipped, max_loss_error, max_norm_error, max_param_error,
      torch_losses.front(), torch_losses.back());
  EXPECT_LE(max_norm_error, 1e-5);
  EXPECT_LE(max_param_error, 1e-4);
  EXPECT_LT(torch_losses.back(), torch_losses.front() - 0.1);  // the run really trains
  EXPECT_GT(clipped, 0);  // both paths of clipping were exercised
  EXPECT_LT(clipped, c.steps);
}

LlamaConfig tiny_config(bool tied, int64_t kv_heads, int64_t head_dim) {
  return test::llama_config({.vocab = 61,
                             .hidden = 24,
                             .intermediate = 40,
                             .layers = 2,
                             .heads = 4,
                             .kv_heads = kv_heads,
                             .head_dim = head_dim,
                             .rms_norm_eps = 1e-5,
                             .rope_theta = 10000.0,
                             .max_positions = 64,
                             .tied = tied});
}

INSTANTIATE_TEST_SUITE_P(
    Configs, TrainTorchParity,
    ::testing::Values(ParityCase{"gqa-untied-head_dim8", tiny_config(false, 2, 8), 3, 12, 20},
                      ParityCase{"mha-tied-head_dim6", tiny_config(true, 4, 6), 2, 20, 8}),
    [](const ::testing::TestParamInfo<ParityCase>& info) {
      std::string name = info.param.name;
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

}  // namespace
}  // namespace bd
