// Scale distillation: optimise only the BitDelta scales (per matrix or per row) so that the
// compressed model's next-token distributions match the fine-tune's on calibration text.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/adapter.h"
#include "io/checkpoint.h"

namespace bd {

enum class DistillLoss {
  KL,        // KL(fine-tune ‖ compressed), mean over predicted positions
  LogitMSE,  // mean squared logit difference (the BitDelta paper's objective)
};

struct DistillOptions {
  std::string calib_path;  // calibration text, tokenized with the fine-tune's tokenizer
  DistillLoss loss = DistillLoss::KL;
  int64_t steps = 200;
  int64_t batch = 4;
  int64_t seq = 128;
  double lr = 1e-4;             // Adam, cosine decay to lr·min_lr_ratio
  double min_lr_ratio = 0.1;
  double heldout_fraction = 0.1;  // tail of the calibration tokens kept for the report
  uint64_t seed = 0;
  bool quiet = false;           // no progress line
};

struct DistillReport {
  std::string loss_name;     // "kl" | "logit_mse"
  double heldout_before = 0;  // loss on held-out calibration windows with the initial scales
  double heldout_after = 0;   // the same after distillation
  int64_t steps = 0;
  int64_t heldout_tokens = 0;
  double seconds = 0;
};

// Optimises the scales in place: scales[i] points to matrices[i]'s scale values
// ([1] or [out] floats). Gradients come from the engine's backward pass
// (dL/dγ = Σ dY ⊙ (S·X)), never from finite differences.
DistillReport distill_scales(const Checkpoint& base, const Checkpoint& finetune,
                             const std::vector<AdapterMatrix>& matrices,
                             const std::vector<AdapterExact>& exact,
                             const std::vector<float*>& scales, const DistillOptions& options);

}  // namespace bd
