// The linear layers of the model. Every matrix product with a weight matrix goes through
// linear_forward / linear_backward, so that a per-matrix delta overlay (y += γ ⊙ (S·x)) or a
// per-example gradient hook can be added here once for all of them.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace bd {

struct Linear {
  std::string name;   // checkpoint tensor name, e.g. "model.layers.0.mlp.up_proj.weight"
  TensorView weight;  // [O, I] (HF layout), F32, BF16 or F16
  int64_t out_features() const { return weight.dim(0); }
  int64_t in_features() const { return weight.dim(1); }
};

// y[rows, O] (+)= x[rows, I] · Wᵀ; `accumulate` adds to y (a residual stream) instead of
// overwriting it.
void linear_forward(float* y, const float* x, const Linear& linear, int64_t rows,
                    bool accumulate = false);

// Given dy[rows, O] and the forward's x[rows, I]: dx[rows, I] (+)= dy · W (added when
// accumulate_dx, skipped when dx is null) and dW[O, I] += dyᵀ · x. W must be F32 (training
// keeps F32 master weights); throws bd::Error naming the weight otherwise.
void linear_backward(float* dx, float* dW, const float* dy, const float* x, const Linear& linear,
                     int64_t rows, bool accumulate_dx = false);

}  // namespace bd
