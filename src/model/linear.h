// The linear layers of the model. Every matrix product with a weight matrix goes through
// linear_forward / linear_backward. An adapter's delta (model/llama_delta.h) is never merged into
// the stored W: a segment of few rows (decode) gets its signs by table lookup on top of one base
// product shared by all such rows; a segment of many rows (a prompt, a training batch) is
// multiplied by W + γ·S widened block by block into a scratch buffer (one SGEMM instead of two).
#pragma once
#include <cstdint>
#include <string>
#include <utility>

#include "core/tensor.h"
#include "model/llama_delta.h"

namespace bd {

struct Linear {
  Linear() = default;
  Linear(std::string name_, TensorView weight_, int64_t slot_ = -1)
      : name(std::move(name_)), weight(std::move(weight_)), slot(slot_) {}

  std::string name;   // checkpoint tensor name, e.g. "model.layers.0.mlp.up_proj.weight"
  TensorView weight;  // [O, I] (HF layout), F32, BF16 or F16
  int64_t slot = -1;  // index of this layer's LinearDelta in a LlamaDelta (-1: none may apply)
  // W re-laid into panels (kernels/matmul_panels.h; a server's BF16 linears on AVX2), or null:
  // every forward product then reads these instead of `weight` (the backward still reads W).
  const uint32_t* panels = nullptr;
  int64_t out_features() const { return weight.dim(0); }
  int64_t in_features() const { return weight.dim(1); }
};

// y[rows, O] (+)= x[rows, I] · W ᵀ, then for every segment with a delta, on its rows:
// y += γ ⊙ (S·x) (packed signs) or x·Δᵀ (exact delta). `accumulate` adds to y (a residual
// stream) instead of overwriting it. Segments list only rows that have a delta, in row order,
// without overlaps.
void linear_forward(float* y, const float* x, const Linear& linear, int64_t rows,
                    Segments segments = {}, bool accumulate = false);

// Given dy[rows, O] and the forward's x[rows, I]: dx[rows, I] (+)= dy · W_effective (added when
// accumulate_dx, skipped when dx is null; W may be F32, BF16 or F16; each segment's delta
// included) and dW[O, I] += dyᵀ · x (the base weight's gradient; skipped when dW is null, e.g.
// when only an adapter's scales are trained).
void linear_backward(float* dx, float* dW, const float* dy, const float* x, const Linear& linear,
                     int64_t rows, Segments segments = {}, bool accumulate_dx = false);

}  // namespace bd
