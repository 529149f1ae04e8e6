#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <string>

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
  if (!dp) return;
  if (!(dp->noise_multiplier >= 0) || !std::isfinite(dp->noise_multiplier))
    fail("the noise multiplier must be a finite number >= 0, got ", dp->noise_multiplier);
  if (!(dp->max_grad_norm > 0) || !std::isfinite(dp->max_grad_norm))
    fail("the per-example clipping norm must be a positive number, got ", dp->max_grad_norm);
  if (!(dp->sample_rate > 0 && dp->sample_rate <= 1))
    fail("the sample rate must lie in (0, 1], got ", dp->sample_rate);
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
  if (!options_.dp) return;
  std::set<std::string> frozen;
  for (size_t i = 0; i < params.slices().size(); ++i)
    if (optimizer_.segments()[i].frozen) frozen.insert(params.slices()[i].name);
  clipper_.emplace(params.config(), std::move(frozen), options_.batch, options_.seq,
                   options_.dp->method);
  dp_random_.emplace(options_.dp->seed);
}

TrainActivations& Trainer::activations(int64_t B, int64_t T) {
  if (!acts_ || acts_->T != T || acts_->capacity() < B) {
    acts_.reset();  // free the old buffers before allocating the new ones
    acts_ = std::make_unique<TrainActivations>(params_.config(), std::max(B, options_.batch), T);
  }
  acts_->set_batch(B);
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
  return update(loss, norm, batch.batch);
}

StepStats Trainer::update(float loss, double norm, int64_t examples) {
  if ((examples > 0 && !std::isfinite(loss)) || !std::isfinite(norm))
    fail("training diverged at step ", steps_done() + 1, ": loss ", loss, ", gradient norm ", norm,
         options_.dp ? " (try a lower --lr)" : " (try a lower --lr or --clip)");
  const double lr = schedule_.lr_at(steps_done());
  optimizer_.step(params_.data(), grads_.data(), float(lr));
  return StepStats{loss, norm, lr, examples, 0};
}

std::vector<int64_t> Trainer::sample_windows(int64_t windows) {
  if (!options_.dp) fail("sample_windows: this trainer is not private");
  return dp_random_->poisson_sample(windows, options_.dp->sample_rate);
}

StepStats Trainer::private_step(const std::vector<int32_t>& tokens,
                                std::span<const int64_t> windows) {
  if (!options_.dp) fail("private_step: this trainer is not private");
  const DpOptions& dp = *options_.dp;
  const int64_t total = disjoint_window_count(int64_t(tokens.size()), options_.seq);
  grads_.zero();
  double loss_sum = 0, norm_sum = 0;
  int64_t clipped = 0;
  for (size_t start = 0; start < windows.size(); start += size_t(options_.batch)) {
    const std::span<const int64_t> part =
        windows.subspan(start, std::min(windows.size() - start, size_t(options_.batch)));
    const Batch batch = window_batch(tokens, options_.seq, part);
    TrainActivations& acts = activations(batch.batch, batch.seq);
    const float loss = forward_train(weights_, batch.inputs.data(), batch.targets.data(),
                                     batch.batch, batch.seq, acts);
    loss_sum += double(loss) * double(part.size());
    const ClipStats clip = clipper_->clip_and_accumulate(weights_, acts, dp.max_grad_norm, grads_);
    for (double norm : clip.norms) norm_sum += norm;
    clipped += clip.clipped;
  }
  // Noise on every coordinate that trains (frozen ones are never updated), then the mean over
  // the expected batch: a fixed divisor, so one window's influence stays bounded by C / (qN).
  for (const ParamSegment& segment : optimizer_.segments())
    if (!segment.frozen)
      dp_random_->add_gaussian(grads_.data() + segment.offset, segment.size,
                               dp.noise_multiplier * dp.max_grad_norm);
  const float inverse_batch = float(1.0 / (dp.sample_rate * double(total)));
  float* g = grads_.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(grads_.size()); ++i) g[i] *= inverse_batch;

  const int64_t examples = int64_t(windows.size());
  const float loss = examples ? float(loss_sum / double(examples)) : std::nanf("");
  StepStats stats = update(loss, examples ? norm_sum / double(examples) : 0.0, examples);
  stats.clipped = clipped;
  return stats;
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
  const int64_t windows = disjoint_window_count(int64_t(data.train.size()), options.seq);
  TrainReport report;
  double step_seconds = 0;
  float last_loss = std::nanf("");  // of the last step that saw data
  Progress progress("train", options.steps, "steps", options.quiet);
  for (int64_t s = 1; s <= options.steps; ++s) {
    StepStats stats;
    const auto step_start = Clock::now();
    if (options.dp) {
      const std::vector<int64_t> sample = trainer.sample_windows(windows);
      stats = trainer.private_step(data.train, sample);
    } else {
      stats = trainer.step(sampler.next());
    }
    step_seconds += seconds_since(step_start);
    report.losses.push_back(stats.loss);
    if (stats.examples > 0) last_loss = stats.loss;
    report.trained_tokens += stats.examples * options.seq;
    report.clipped += stats.clipped;
    if (options.eval_every > 0 && s % options.eval_every == 0 && s < options.steps &&
        periodic_heldout.size() >= 2)
      report.evals.push_back(trainer.evaluate(periodic_heldout));
    progress.update(
        s, progress_text(stats, double(report.trained_tokens) / step_seconds, report.evals));
  }
  progress.finish();
  report.steps = options.steps;
  report.final_loss = last_loss;
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
