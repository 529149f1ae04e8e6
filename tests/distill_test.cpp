// Scale distillation: the backward without parameter gradients, the scale gradient from the
// engine's backward pass against central finite differences (KL and logit MSE, per-matrix and
// per-row scales, F32 and BF16 bases, vocabularies on either side of the objective's threshold
// for threads), and a short distillation run that must lower the held-out loss on a small
// synthetic fine-tune.
#include "delta/distill.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "delta_test_util.h"
#include "kernels/cross_entropy.h"
#include "kernels/parallel.h"
#include "model/byte_tokenizer.h"
#include "model/llama_delta.h"
#include "test_util.h"

namespace bd {
namespace {

using test::InMemoryAdapter;
using test::ScratchDir;

// Records every (X, dY) the backward shows, by weight name.
struct Recorder : LinearBackwardObserver {
  std::map<std::string, std::vector<float>> x, dy;
  void on_linear(const std::string& name, const float* X, const float* dY, int64_t rows, int64_t in,
                 int64_t out) override {
    x[name].assign(X, X + rows * in);
    dy[name].assign(dY, dY + rows * out);
  }
};

std::vector<int32_t> random_ids(size_t n, int64_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = int32_t(rng() % uint32_t(vocab));
  return ids;
}

// `params` stored in `dtype` as a checkpoint folder (values must be representable in dtype).
void save_params(const std::string& dir, const LlamaParams& params, DType dtype,
                 const std::string& tokenizer_json = "") {
  std::vector<NamedTensor> tensors = params.named_tensors();
  std::vector<std::vector<uint8_t>> bytes;
  bytes.reserve(tensors.size());
  for (NamedTensor& t : tensors) {
    bytes.emplace_back(size_t(t.view.numel()) * dtype_size(dtype));
    from_f32(dtype, t.view.as<float>(), bytes.back().data(), size_t(t.view.numel()));
    t.view = TensorView{dtype, t.view.shape, bytes.back().data()};
  }
  save_checkpoint(dir, params.config(), tensors, tokenizer_json, {}, false);
}

void round_to(LlamaParams& params, DType dtype) {
  std::vector<uint8_t> bytes(params.size() * dtype_size(dtype));
  from_f32(dtype, params.data(), bytes.data(), params.size());
  to_f32(dtype, bytes.data(), params.data(), params.size());
}

// backward_from_logits with grads = nullptr, fed the cross-entropy's logit gradient, shows the
// observer exactly what the full backward shows, and leaves the same input gradient.
TEST(BackwardFromLogits, WithoutGradsMatchesTheFullBackward) {
  const LlamaConfig config = test::llama_config({.vocab = 29,
                                                 .hidden = 16,
                                                 .intermediate = 24,
                                                 .layers = 2,
                                                 .heads = 4,
                                                 .kv_heads = 2,
                                                 .head_dim = 4});
  const LlamaParams params = test::random_llama_params(config, 5, 0.3f, 0.1f);
  const int64_t B = 2, T = 7, rows = B * T;
  const std::vector<int32_t> ids = random_ids(size_t(rows + 1), config.vocab_size, 6);
  const std::vector<int32_t> targets(ids.begin() + 1, ids.end());
  TrainActivations acts(config, B, T);

  Recorder full;
  LlamaParams grads(config);
  forward_train(params.weights(), ids.data(), targets.data(), B, T, acts);
  backward(params.weights(), acts, grads, &full);
  const std::vector<float> full_dh(acts.d_h, acts.d_h + rows * config.hidden_size);

  Recorder observed;
  forward_train(params.weights(), ids.data(), targets.data(), B, T, acts);
  cross_entropy_backward(acts.logits, acts.logits, acts.lse, targets.data(), rows,
                         config.vocab_size, 1.0f / float(acts.counted));
  backward_from_logits(params.weights(), acts, nullptr, &observed);

  EXPECT_EQ(observed.x.size(), size_t(7 * config.num_hidden_layers + 1));
  EXPECT_EQ(observed.x, full.x);
  EXPECT_EQ(observed.dy, full.dy);
  EXPECT_EQ(std::vector<float>(acts.d_h, acts.d_h + rows * config.hidden_size), full_dh);
}

struct GradCase {
  DistillLoss loss;
  bool per_row;
  DType dtype;
  int64_t vocab = 31;  // 12 positions × 31: the objective's loops run on one thread
};

class ScaleGradient : public ::testing::TestWithParam<GradCase> {};

// ∂loss/∂γ from loss_and_gradient against (loss(γ + h) − loss(γ − h)) / 2h for every scale value.
TEST_P(ScaleGradient, MatchesFiniteDifferences) {
  const auto [loss, per_row, dtype, vocab] = GetParam();
  const LlamaConfig config = test::llama_config({.vocab = vocab,
                                                 .hidden = 16,
                                                 .intermediate = 24,
                                                 .layers = 2,
                                                 .heads = 4,
                                                 .kv_heads = 2,
                                                 .head_dim = 4,
                                                 .max_positions = 16});
  LlamaParams base = test::random_llama_params(config, 41, 0.3f, 0.1f);
  round_to(base, dtype);
  const LlamaParams finetune = test::finetune_of(base, 0.08f, 42);
  InMemoryAdapter adapter = test::compress_in_memory(
      base, finetune, [row = per_row](const std::string&) { return row; },
      {"model.embed_tokens.weight", "model.norm.weight"}, dtype);
  // Move the scales off mean |δ| so that every gradient is clearly non-zero.
  std::mt19937 rng(43);
  std::uniform_real_distribution<float> factor(0.5f, 1.5f);
  for (std::vector<float>& s : adapter.scale_values)
    for (float& g : s) g *= factor(rng);

  ScratchDir scratch;
  save_params(scratch / "base", base, dtype);
  const Checkpoint checkpoint(scratch / "base");
  const LlamaWeights student = weights_from_checkpoint(checkpoint);
  const LlamaDelta delta = make_llama_delta(student, checkpoint.dir(), adapter.matrices,
                                            adapter.exact, adapter.scale_pointers());
  const LlamaWeights teacher = finetune.weights();
  DistillObjective objective(teacher, student, delta, adapter.matrices, loss);
  const int64_t B = 2, T = 6;
  ASSERT_EQ(B * T * vocab >= kMinParallelWork, vocab == 2750);
  const std::vector<int32_t> tokens = random_ids(size_t(B * T), config.vocab_size, 44);

  std::vector<float> grad(size_t(objective.scale_count()), 0.0f);
  const double value = objective.loss_and_gradient(tokens.data(), B, T, grad.data());
  EXPECT_EQ(value, objective.loss(tokens.data(), B, T));  // the backward changed nothing

  std::vector<double> numeric;
  for (std::vector<float>& s : adapter.scale_values) {
    for (float& g : s) {
      const float saved = g, h = 1e-2f * saved;
      g = saved + h;
      const double up = objective.loss(tokens.data(), B, T);
      g = saved - h;
      const double down = objective.loss(tokens.data(), B, T);
      g = saved;
      numeric.push_back((up - down) / (double(saved + h) - double(saved - h)));
    }
  }
  // Normwise: the finite differences' error is the loss's rounding over h, about the same for
  // every scale, so small gradients cannot be held to a relative bound of their own.
  const double error = test::max_relative_error(grad.data(), numeric.data(), int64_t(grad.size()));
  std::printf("%s %s %s: loss %.4g, %zu scales, max |dγ − fd| / max |fd| = %.2e\n",
              distill_loss_name(loss), per_row ? "per-row" : "per-matrix",
              std::string(dtype_name(dtype)).c_str(), value, grad.size(), error);
  EXPECT_LT(error, 2e-3);
}

INSTANTIATE_TEST_SUITE_P(Losses, ScaleGradient,
                         ::testing::Values(GradCase{DistillLoss::KL, false, DType::F32},
                                           GradCase{DistillLoss::KL, true, DType::F32},
                                           GradCase{DistillLoss::LogitMSE, false, DType::F32},
                                           GradCase{DistillLoss::LogitMSE, true, DType::F32},
                                           GradCase{DistillLoss::KL, true, DType::BF16},
                                           // 12 positions × 2750 is above kMinParallelWork:
                                           // the objective's loops run on threads.
                                           GradCase{DistillLoss::KL, false, DType::F32, 2750},
                                           GradCase{DistillLoss::LogitMSE, false, DType::F32,
                                                    2750}),
                         [](const ::testing::TestParamInfo<GradCase>& info) {
                           return std::string(distill_loss_name(info.param.loss)) +
                                  (info.param.per_row ? "_row_" : "_matrix_") +
                                  std::string(dtype_name(info.param.dtype)) +
                                  (info.param.vocab == 31 ? "" : cat("_V", info.param.vocab));
                         });

// Repetitive text made of a few hundred words drawn from a small list: enough structure for a
// byte-level model's two checkpoints to disagree in ways that the scales can partly repair.
std::string calibration_text(size_t words, unsigned seed) {
  const char* vocabulary[] = {"the",    "delta", "of",    "a",     "fine",   "tune",
                              "is",     "kept",  "as",    "one",   "bit",    "per",
                              "weight", "and",   "scale", "row",   "matrix", "model",
                              "base",   "user",  "text",  "signs", "packed", "sum."};
  std::mt19937 rng(seed);
  std::string text;
  for (size_t i = 0; i < words; ++i) {
    text += vocabulary[rng() % std::size(vocabulary)];
    text += i % 11 == 10 ? "\n" : " ";
  }
  return text;
}

struct DistillFixture {
  ScratchDir scratch;
  LlamaParams base, finetune;
  InMemoryAdapter adapter;
  std::string calib;

  explicit DistillFixture(bool per_row)
      : base(test::random_llama_params(config(), 51, 0.2f, 0.1f)),
        finetune(test::finetune_of(base, 0.05f, 52)) {
    adapter = test::compress_in_memory(
        base, finetune, [row = per_row](const std::string&) { return row; },
        test::exact_tensor_names(config()), DType::F32);
    save_params(scratch / "base", base, DType::F32, byte_tokenizer_json());
    save_params(scratch / "finetune", finetune, DType::F32, byte_tokenizer_json());
    calib = scratch.write("calib.txt", calibration_text(1200, 53));
  }
  static LlamaConfig config() {
    return test::llama_config({.vocab = kByteVocabSize,
                               .hidden = 32,
                               .intermediate = 48,
                               .layers = 2,
                               .heads = 4,
                               .kv_heads = 2,
                               .head_dim = 8,
                               .max_positions = 64});
  }
  DistillReport run(const DistillOptions& options) {
    const Checkpoint base_checkpoint(scratch / "base"), tuned_checkpoint(scratch / "finetune");
    return distill_scales(base_checkpoint, tuned_checkpoint, adapter.matrices, adapter.exact,
                          adapter.scale_pointers(), options);
  }
};

DistillOptions quick_options(const std::string& calib, DistillLoss loss) {
  DistillOptions options;
  options.calib_path = calib;
  options.loss = loss;
  options.steps = 40;
  options.batch = 4;
  options.seq = 32;
  options.lr = 0.1;  // a short run on a tiny model takes larger steps than the default
  options.quiet = true;
  return options;
}

class Distillation : public ::testing::TestWithParam<GradCase> {};

TEST_P(Distillation, LowersTheHeldOutLoss) {
  const auto [loss, per_row, dtype, vocab] = GetParam();
  DistillFixture fixture(per_row);
  const std::vector<std::vector<float>> initial = fixture.adapter.scale_values;
  const DistillReport report = fixture.run(quick_options(fixture.calib, loss));
  std::printf("%s %s: held-out %.5f -> %.5f (%lld positions, %lld scales, %.2f s)\n",
              report.loss_name.c_str(), per_row ? "per-row" : "per-matrix", report.heldout_before,
              report.heldout_after, (long long)report.heldout_tokens, (long long)report.scale_count,
              report.seconds);
  EXPECT_EQ(report.loss_name, distill_loss_name(loss));
  EXPECT_EQ(report.steps, 40);
  EXPECT_GT(report.heldout_tokens, 0);
  EXPECT_GT(report.heldout_before, 0);
  EXPECT_LT(report.heldout_after, 0.95 * report.heldout_before);
  EXPECT_NE(fixture.adapter.scale_values, initial);  // trained in place
  for (const std::vector<float>& s : fixture.adapter.scale_values)
    for (float g : s) EXPECT_GT(g, 0.0f);
}

INSTANTIATE_TEST_SUITE_P(Losses, Distillation,
                         ::testing::Values(GradCase{DistillLoss::KL, false, DType::F32},
                                           GradCase{DistillLoss::KL, true, DType::F32},
                                           GradCase{DistillLoss::LogitMSE, false, DType::F32}),
                         [](const ::testing::TestParamInfo<GradCase>& info) {
                           return std::string(distill_loss_name(info.param.loss)) +
                                  (info.param.per_row ? "_row" : "_matrix");
                         });

// No steps: the scales are untouched and the loss before is the loss after; the held-out loss
// is the mean over the held-out positions, checked against DistillObjective directly.
TEST(Distillation, ZeroStepsChangeNothing) {
  DistillFixture fixture(false);
  const std::vector<std::vector<float>> initial = fixture.adapter.scale_values;
  DistillOptions options = quick_options(fixture.calib, DistillLoss::KL);
  options.steps = 0;
  const DistillReport report = fixture.run(options);
  EXPECT_EQ(fixture.adapter.scale_values, initial);
  EXPECT_EQ(report.heldout_before, report.heldout_after);
  EXPECT_EQ(report.steps, 0);
}

TEST(Distillation, RejectsBadInput) {
  DistillFixture fixture(false);
  auto run = [&](DistillOptions options) { return [&fixture, options] { fixture.run(options); }; };
  DistillOptions options = quick_options(fixture.calib, DistillLoss::KL);
  options.calib_path = "";
  test::expect_error(run(options), {"calibration"});
  options.calib_path = fixture.scratch / "missing.txt";
  test::expect_error(run(options), {"missing.txt"});
  options.calib_path = fixture.scratch.write("short.txt", "too short");
  test::expect_error(run(options), {"short.txt"});
  options = quick_options(fixture.calib, DistillLoss::KL);
  options.lr = -1;
  test::expect_error(run(options), {"learning rate"});
  options = quick_options(fixture.calib, DistillLoss::KL);
  options.heldout_fraction = 1;
  test::expect_error(run(options), {"held-out fraction"});
  options = quick_options(fixture.calib, DistillLoss::KL);
  options.steps = -3;
  test::expect_error(run(options), {"steps"});
  options = quick_options(fixture.calib, DistillLoss::KL);
  test::expect_error(
      [&] {
        const Checkpoint base(fixture.scratch / "base"), tuned(fixture.scratch / "finetune");
        distill_scales(base, tuned, fixture.adapter.matrices, fixture.adapter.exact, {}, options);
      },
      {"0 scale buffers for"});
}

}  // namespace
}  // namespace bd
