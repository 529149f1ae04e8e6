#include "delta/distill.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/progress.h"
#include "model/llama_delta.h"
#include "model/tokenizer.h"
#include "train/adamw.h"
#include "train/data.h"
#include "train/lr_schedule.h"

namespace bd {

namespace {

void check_options(const DistillOptions& o) {
  if (o.calib_path.empty()) fail("distillation needs calibration text (no calibration file given)");
  if (o.steps < 0) fail("distillation steps must be >= 0, got ", o.steps);
  if (o.batch <= 0 || o.seq <= 0)
    fail("distillation batch and sequence length must be positive, got ", o.batch, " and ", o.seq);
  if (!(o.lr > 0) || !std::isfinite(o.lr))
    fail("distillation learning rate must be positive, got ", o.lr);
  if (!(o.heldout_fraction > 0 && o.heldout_fraction < 1))
    fail("distillation held-out fraction must be in (0, 1), got ", o.heldout_fraction);
  if (o.heldout_max_tokens < 2)
    fail("distillation needs at least 2 held-out tokens, got ", o.heldout_max_tokens);
}

// The calibration text's tokens under the fine-tune's tokenizer, split into a train part and a
// held-out tail (at most heldout_max_tokens of it).
TokenData calibration_tokens(const Checkpoint& finetune, const DistillOptions& o) {
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer_for_model(finetune.dir());
  const int64_t vocab = finetune.config().vocab_size;
  const EncodeFn encode = [&](std::string_view text) {
    std::vector<int32_t> ids = tokenizer->encode(text, false);
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= vocab)
        fail(o.calib_path, ": the tokenizer produced id ", ids[i], " at position ", i,
             ", outside the model's vocabulary of ", vocab);
    return ids;
  };
  TokenData data = load_token_data(o.calib_path, encode, o.heldout_fraction, o.seq);
  if (int64_t(data.heldout.size()) > o.heldout_max_tokens)
    data.heldout.resize(size_t(o.heldout_max_tokens));
  return data;
}

// Mean loss over every position of the held-out windows.
double heldout_loss(DistillObjective& objective, const std::vector<Batch>& batches,
                    int64_t* positions) {
  double total = 0;
  int64_t count = 0;
  for (const Batch& b : batches) {
    total += objective.loss(b.inputs.data(), b.batch, b.seq) * double(b.batch * b.seq);
    count += b.batch * b.seq;
  }
  *positions = count;
  return count ? total / double(count) : 0.0;
}

// Every scale value, in the objective's gradient order.
std::vector<float*> scale_values(const std::vector<AdapterMatrix>& matrices,
                                 const std::vector<float*>& scales) {
  if (scales.size() != matrices.size())
    fail("distillation: ", scales.size(), " scale buffers for ", matrices.size(), " matrices");
  std::vector<float*> values;
  for (size_t i = 0; i < matrices.size(); ++i) {
    const int64_t count = matrices[i].per_row() ? matrices[i].out : 1;
    for (int64_t j = 0; j < count; ++j) values.push_back(scales[i] + j);
  }
  return values;
}

}  // namespace

DistillReport distill_scales(const Checkpoint& base, const Checkpoint& finetune,
                             const std::vector<AdapterMatrix>& matrices,
                             const std::vector<AdapterExact>& exact,
                             const std::vector<float*>& scales, const DistillOptions& options) {
  check_options(options);
  const auto start = std::chrono::steady_clock::now();
  // Windows never run past the model's context.
  DistillOptions o = options;
  o.seq = std::min(o.seq, finetune.config().max_position_embeddings);
  const std::vector<float*> gamma = scale_values(matrices, scales);
  const TokenData data = calibration_tokens(finetune, o);
  const std::vector<Batch> heldout = eval_batches(data.heldout, o.batch, o.seq);

  const LlamaWeights teacher = weights_from_checkpoint(finetune);
  const LlamaWeights student = weights_from_checkpoint(base);
  // The delta views the scales we update.
  const LlamaDelta delta = make_llama_delta(student, base.dir(), matrices, exact, scales);
  DistillObjective objective(teacher, student, delta, matrices, o.loss);

  DistillReport report;
  report.loss_name = distill_loss_name(o.loss);
  report.scale_count = int64_t(gamma.size());
  report.heldout_before = heldout_loss(objective, heldout, &report.heldout_tokens);

  // Adam on u = log γ; a scale that starts at 0 (or below) is frozen.
  const size_t n = gamma.size();
  std::vector<float> log_gamma(n), grad(n);
  std::vector<bool> trained(n);
  for (size_t k = 0; k < n; ++k) {
    trained[k] = *gamma[k] > 0;
    log_gamma[k] = trained[k] ? std::log(*gamma[k]) : 0.0f;
  }
  AdamW adam(n, AdamWConfig{.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f});
  const LrSchedule schedule{.peak_lr = o.lr,
                            .warmup_steps = 0,
                            .total_steps = std::max<int64_t>(o.steps, 1),
                            .min_lr_ratio = o.min_lr_ratio};
  schedule.validate();
  BatchSampler sampler(data.train, o.batch, o.seq, o.seed);
  Progress progress("distill", o.steps, "step", o.quiet);
  for (int64_t step = 0; step < o.steps; ++step) {
    const Batch batch = sampler.next();
    std::fill(grad.begin(), grad.end(), 0.0f);
    const double loss =
        objective.loss_and_gradient(batch.inputs.data(), batch.batch, batch.seq, grad.data());
    if (!std::isfinite(loss))
      fail("distillation diverged at step ", step + 1, " (", report.loss_name, " ", loss,
           "); try a lower learning rate");
    for (size_t k = 0; k < n; ++k) grad[k] = trained[k] ? grad[k] * *gamma[k] : 0.0f;  // ∂/∂u
    adam.step(log_gamma.data(), grad.data(), float(schedule.lr_at(step)));
    for (size_t k = 0; k < n; ++k)
      if (trained[k]) *gamma[k] = std::exp(log_gamma[k]);
    progress.update(step + 1, cat(report.loss_name, " ", loss));
  }
  progress.finish();

  report.steps = o.steps;
  report.heldout_after = heldout_loss(objective, heldout, &report.heldout_tokens);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace bd
