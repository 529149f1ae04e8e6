#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/progress.h"
#include "train/grad_clip.h"

namespace bd {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string progress_text(const StepStats& stats, double tokens_per_second,
                          const std::vector<HeldoutEval>& evals) {
  char text[128];
  std::snprintf(text, sizeof text, "loss %.4f | %.0f tok/s", stats.loss, tokens_per_second);
  std::string line = text;
  if (!evals.empty()) {
    std::snprintf(text, sizeof text, " | held-out %.4f", evals.back().nll);
    line += text;
  }
  return line;
}

}  // namespace

void TrainOptions::validate() const {
  if (batch < 1) fail("batch must be at least 1, got ", batch);
  if (seq < 1) fail("seq must be at least 1, got ", seq);
  schedule().validate();
  if (!std::isfinite(clip)) fail("clip must be a finite number, got ", clip);
  if (eval_every < 0) fail("eval-every must be >= 0, got ", eval_every);
  if (eval_tokens < 0) fail("eval-tokens must be >= 0, got ", eval_tokens);
}

std::vector<ParamSegment> param_segments(const LlamaParams& params, bool freeze_embeddings) {
  std::vector<ParamSegment> segments;
  for (const ParamSlice& slice : params.slices())
    segments.push_back({slice.offset, slice.numel, slice.shape.size() >= 2,
                        freeze_embeddings && slice.name == "model.embed_tokens.weight"});
  return segments;
}

Trainer::Trainer(LlamaParams& params, const TrainOptions& options)
    : params_(params),
      options_(options),
      schedule_(options.schedule()),
      weights_(params.weights()),
      grads_(params.config()),
      optimizer_(params.size(), options.adamw, param_segments(params, options.freeze_embeddings)) {
  options_.validate();
}

TrainActivations& Trainer::activations(int64_t B, int64_t T) {
  if (!acts_ || acts_->B != B || acts_->T != T) {
    acts_.reset();  // free the old buffers before allocating the new ones
    acts_ = std::make_unique<TrainActivations>(params_.config(), B, T);
  }
  return *acts_;
}

std::pair<float, double> Trainer::batch_gradient(const Batch& batch) {
  TrainActivations& acts = activations(batch.batch, batch.seq);
  grads_.zero();
  const float loss = forward_train(weights_, batch.inputs.data(), batch.targets.data(), batch.batch,
                                   batch.seq, acts);
  backward(weights_, acts, grads_);
  // Frozen tensors take no part in the update, so none in the norm that clipping sees either.
  for (const ParamSegment& segment : optimizer_.segments())
    if (segment.frozen) std::fill_n(grads_.data() + segment.offset, segment.size, 0.0f);
  const double norm = clip_grad_norm(grads_.data(), grads_.size(), options_.clip);
  return {loss, norm};
}

StepStats Trainer::step(const Batch& batch) {
  const auto [loss, norm] = batch_gradient(batch);
  if (!std::isfinite(loss) || !std::isfinite(norm))
    fail("training diverged at step ", steps_done() + 1, ": loss ", loss, ", gradient norm ", norm,
         " (try a lower --lr or --clip)");
  const double lr = schedule_.lr_at(steps_done());
  optimizer_.step(params_.data(), grads_.data(), float(lr));
  return StepStats{loss, norm, lr};
}

HeldoutEval Trainer::evaluate(const std::vector<int32_t>& tokens) {
  double nll_sum = 0;
  int64_t predicted = 0;
  for (const Batch& batch : eval_batches(tokens, options_.batch, options_.seq)) {
    TrainActivations& acts = activations(batch.batch, batch.seq);
    const float loss = forward_train(weights_, batch.inputs.data(), batch.targets.data(),
                                     batch.batch, batch.seq, acts);
    nll_sum += double(loss) * double(acts.counted);
    predicted += acts.counted;
  }
  return HeldoutEval{steps_done(), predicted ? nll_sum / double(predicted) : 0.0, predicted};
}

TrainReport train(Trainer& trainer, const TokenData& data) {
  const TrainOptions& options = trainer.options();
  const auto start = Clock::now();
  BatchSampler sampler(data.train, options.batch, options.seq, options.seed);
  const std::vector<int32_t> periodic_heldout(
      data.heldout.begin(),
      options.eval_tokens > 0 && int64_t(data.heldout.size()) > options.eval_tokens
          ? data.heldout.begin() + options.eval_tokens
          : data.heldout.end());
  TrainReport report;
  double step_seconds = 0;
  Progress progress("train", options.steps, "steps", options.quiet);
  for (int64_t s = 1; s <= options.steps; ++s) {
    const Batch batch = sampler.next();
    const auto step_start = Clock::now();
    const StepStats stats = trainer.step(batch);
    step_seconds += seconds_since(step_start);
    report.losses.push_back(stats.loss);
    report.trained_tokens += batch.batch * batch.seq;
    if (options.eval_every > 0 && s % options.eval_every == 0 && s < options.steps &&
        periodic_heldout.size() >= 2)
      report.evals.push_back(trainer.evaluate(periodic_heldout));
    progress.update(
        s, progress_text(stats, double(report.trained_tokens) / step_seconds, report.evals));
  }
  progress.finish();
  report.steps = options.steps;
  report.final_loss = report.losses.back();
  report.tokens_per_second = double(report.trained_tokens) / step_seconds;
  if (data.heldout.size() >= 2) {
    report.evals.push_back(trainer.evaluate(data.heldout));
    report.heldout_nll = report.evals.back().nll;
    report.heldout_tokens = report.evals.back().tokens;
  }
  report.seconds = seconds_since(start);
  return report;
}

}  // namespace bd
