// The scale-distillation objective on one batch: how far the compressed model's next-token
// distributions are from the fine-tune's, and the gradient of that with respect to every
// BitDelta scale, taken from the engine's own backward pass.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/adapter.h"
#include "model/llama.h"

namespace bd {

enum class DistillLoss {
  KL,        // KL(fine-tune ‖ compressed) per position, averaged over positions
  LogitMSE,  // (z_compressed − z_fine-tune)² averaged over positions and vocabulary (BitDelta)
};

const char* distill_loss_name(DistillLoss loss);  // "kl" | "logit_mse"

class DistillObjective {
 public:
  // `teacher`: the fine-tune. The student: the base with the adapter `student_delta` (same
  // architecture). `matrices` are the adapter's compressed matrices: the gradient holds their
  // scales' values in this order ([1] or [out] each). All are views and must outlive this
  // object; the delta's scales are read at every evaluation, so changing them between calls
  // changes the result.
  DistillObjective(const LlamaWeights& teacher, const LlamaWeights& student,
                   const LlamaDelta& student_delta, const std::vector<AdapterMatrix>& matrices,
                   DistillLoss loss);
  ~DistillObjective();

  int64_t scale_count() const { return scale_count_; }

  // The mean loss over the B·T positions of tokens[B, T].
  double loss(const int32_t* tokens, int64_t B, int64_t T);
  // The same, and grad[k] += ∂loss/∂γ_k for every scale value k: one teacher forward, one
  // student forward and one backward without parameter gradients, whose observer turns each
  // compressed linear's (X, dY) into Σ_rows dY ⊙ (S·X) (summed over outputs for a per-matrix
  // scale).
  double loss_and_gradient(const int32_t* tokens, int64_t B, int64_t T, float* grad);

 private:
  class ScaleObserver;
  // Teacher and student forwards; leaves dL/dlogits in acts_->logits and returns the loss.
  double forward(const int32_t* tokens, int64_t B, int64_t T);

  const LlamaWeights& teacher_;
  const LlamaWeights& student_;
  const LlamaDelta& student_delta_;
  DistillLoss loss_;
  int64_t scale_count_ = 0;
  std::unique_ptr<ScaleObserver> observer_;
  std::unique_ptr<TrainActivations> acts_;  // shared by teacher and student, resized on demand
  std::vector<float> teacher_out_;          // [rows, V] teacher log-probs (KL) or logits (MSE)
  std::vector<int32_t> no_targets_;         // [rows] of -1: forward_train's own loss is unused
};

}  // namespace bd
