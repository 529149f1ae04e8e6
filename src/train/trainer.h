// The training loop: sample a batch → forward_train → backward → clip → AdamW step, with a
// progress line, periodic held-out evaluation and the numbers a run reports.
//
// Each stage is its own piece: the model returns gradients (model/llama.h), clipping
// (grad_clip.h) and the optimizer (adamw.h) only see the flat gradient. DP-SGD (private_step)
// replaces the whole-batch gradient and its global-norm clipping with Poisson-sampled windows,
// per-example clipping (per_example_clip.h) and Gaussian noise (dp_random.h), and keeps the rest.
#pragma once
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "model/llama.h"
#include "model/llama_params.h"
#include "train/adamw.h"
#include "train/data.h"
#include "train/dp_random.h"
#include "train/lr_schedule.h"
#include "train/per_example_clip.h"

namespace bd {

// DP-SGD (Abadi et al. 2016): each step samples every disjoint window of the training stream
// with probability sample_rate, clips each window's gradient to max_grad_norm, adds
// N(0, (noise_multiplier · max_grad_norm)²) to every trainable coordinate of the sum and divides
// by the expected batch sample_rate · windows. TrainOptions::batch is then the most windows one
// forward pass holds; a larger sample runs in several.
struct DpOptions {
  double noise_multiplier = 0;  // σ
  double max_grad_norm = 1;     // C
  double sample_rate = 0;       // q
  PerExampleMethod method = PerExampleMethod::ghost;
  std::optional<uint64_t> seed;  // reproducible sampling and noise: not private (tests only)
};

struct TrainOptions {
  int64_t steps = 200;
  int64_t batch = 8;   // B windows per step
  int64_t seq = 128;   // T predicted positions per window
  double lr = 1e-3;    // peak learning rate
  int64_t warmup = 0;  // warm-up steps
  double min_lr_ratio = 0.1;
  AdamWConfig adamw;
  double clip = 1.0;               // max global gradient L2 norm; <= 0 disables clipping
  bool freeze_embeddings = false;  // keep model.embed_tokens (and a tied head) as they are
  uint64_t seed = 0;               // batch sampling
  int64_t eval_every = 0;          // held-out evaluation every N steps; 0: only at the end
  int64_t eval_tokens = 32768;     // held-out tokens per periodic evaluation; 0: all
  bool quiet = false;              // no progress line
  std::optional<DpOptions> dp;     // DP-SGD instead of plain steps

  LrSchedule schedule() const { return LrSchedule{lr, warmup, steps, min_lr_ratio}; }
  void validate() const;  // throws bd::Error naming the bad option
};

struct StepStats {
  float loss = 0;        // mean cross-entropy of the batch, before the update (DP: NaN when
                         // the step sampled no window)
  double grad_norm = 0;  // global L2 norm before clipping (DP: the mean per-example norm)
  double lr = 0;         // the rate the update used
  int64_t examples = 0;  // windows in the step
  int64_t clipped = 0;   // DP: windows whose gradient norm exceeded max_grad_norm
};

struct HeldoutEval {
  int64_t step = 0;    // optimizer steps done when evaluated
  double nll = 0;      // mean nats per predicted token
  int64_t tokens = 0;  // predicted tokens
};

struct TrainReport {
  int64_t steps = 0;
  float final_loss = 0;            // the last step's batch loss
  std::vector<float> losses;       // every step's batch loss
  std::vector<HeldoutEval> evals;  // periodic evaluations, then the final one over all held-out
  double heldout_nll = std::numeric_limits<double>::quiet_NaN();  // final; NaN: no held-out data
  int64_t heldout_tokens = 0;
  int64_t trained_tokens = 0;    // steps · B · T (DP: the windows sampled · T)
  int64_t clipped = 0;           // DP: per-example gradients clipped, over all steps
  double tokens_per_second = 0;  // trained tokens over the time spent in steps (not evals)
  double seconds = 0;            // wall time of the whole run, evals included
};

class Trainer {
 public:
  // Trains `params` in place (it must outlive the trainer). Throws on invalid options.
  Trainer(LlamaParams& params, const TrainOptions& options);

  // One optimizer step on one batch. Throws bd::Error, before touching the parameters, when
  // the loss or the gradient is not finite.
  StepStats step(const Batch& batch);

  // DP-SGD (options.dp set): the windows of a stream of `windows` that the next step includes,
  // Poisson-sampled.
  std::vector<int64_t> sample_windows(int64_t windows);
  // One DP-SGD step over the given disjoint windows of `tokens` (window_batch): the clipped sum
  // in forward passes of at most options.batch windows, noise, division by the expected batch,
  // AdamW. Allocates nothing after the first step. Throws like step().
  StepStats private_step(const std::vector<int32_t>& tokens, std::span<const int64_t> windows);

  // Mean NLL of `tokens` over consecutive windows of seq + 1 tokens (eval_batches), batch
  // windows per forward pass; parameters unchanged.
  HeldoutEval evaluate(const std::vector<int32_t>& tokens);

  int64_t steps_done() const { return optimizer_.steps(); }
  const TrainOptions& options() const { return options_; }

 private:
  // The update direction of one batch in grads_: forward, backward, global-norm clipping.
  // Returns the loss and the norm before clipping.
  std::pair<float, double> batch_gradient(const Batch& batch);
  // Sized for options.batch windows; reallocated only for another T or more windows.
  TrainActivations& activations(int64_t B, int64_t T);
  // The finite check and the AdamW step on grads_, shared by both kinds of step. A NaN loss
  // passes when no window was sampled (a DP step of pure noise).
  StepStats update(float loss, double norm, int64_t examples);

  LlamaParams& params_;
  TrainOptions options_;
  LrSchedule schedule_;
  LlamaWeights weights_;  // F32 views of params_
  LlamaParams grads_;
  AdamW optimizer_;
  std::unique_ptr<TrainActivations> acts_;
  std::optional<PerExampleClipper> clipper_;  // DP only
  std::optional<DpRandom> dp_random_;         // DP only
};

// Runs options.steps steps on random batches of data.train (seeded by options.seed), evaluates
// data.heldout every eval_every steps and at the end, and draws the progress line on a terminal.
TrainReport train(Trainer& trainer, const TokenData& data);

// AdamW segments, one per tensor: weight decay on matrices (embedding, projections, head), not
// on norm vectors; the embedding frozen when `freeze_embeddings`.
std::vector<ParamSegment> param_segments(const LlamaParams& params, bool freeze_embeddings);

}  // namespace bd
