// The linear layers of the model. Every matrix product with a weight matrix goes through
// linear_forward / linear_backward, so that a per-matrix delta overlay (y += γ ⊙ (S·x)) or a
// per-example gradient hook can be added here once for all of them.
#pragma once
#include <cstdint>
#include <string>
#include <utility>

#include "core/tensor.h"

namespace bd {

// A BitDelta overlay on a weight: W_effective = W + γ ⊙ S with S ∈ {−1, +1}[O, I] read from
// packed bits (layout in kernels/sign_matmul.h) and γ per output row or one per matrix. Views
// of memory owned elsewhere (an adapter file, or scales being distilled).
struct SignDelta {
  const uint8_t* bits = nullptr;  // [O, sign_row_bytes(I)]
  const float* scale = nullptr;   // [O] when per_row, else [1]
  bool per_row = false;
};

struct Linear {
  Linear() = default;
  Linear(std::string name_, TensorView weight_, SignDelta delta_ = {})
      : name(std::move(name_)), weight(std::move(weight_)), delta(delta_) {}

  std::string name;   // checkpoint tensor name, e.g. "model.layers.0.mlp.up_proj.weight"
  TensorView weight;  // [O, I] (HF layout), F32, BF16 or F16
  SignDelta delta;    // bits == nullptr: no overlay
  int64_t out_features() const { return weight.dim(0); }
  int64_t in_features() const { return weight.dim(1); }
  bool has_delta() const { return delta.bits != nullptr; }
};

// y[rows, O] (+)= x[rows, I] · (W + γ ⊙ S)ᵀ, the overlay (when present) added by its own sign
// kernel, never merged into W; `accumulate` adds to y (a residual stream) instead of
// overwriting it.
void linear_forward(float* y, const float* x, const Linear& linear, int64_t rows,
                    bool accumulate = false);

// Given dy[rows, O] and the forward's x[rows, I]: dx[rows, I] (+)= dy · (W + γ ⊙ S) (added when
// accumulate_dx, skipped when dx is null; W may be F32, BF16 or F16) and dW[O, I] += dyᵀ · x
// (skipped when dW is null, e.g. when only an overlay's scales are trained).
void linear_backward(float* dx, float* dW, const float* dy, const float* x, const Linear& linear,
                     int64_t rows, bool accumulate_dx = false);

}  // namespace bd
