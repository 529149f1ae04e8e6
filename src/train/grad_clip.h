// Gradient-norm clipping over the whole flat gradient (torch.nn.utils.clip_grad_norm_).
// Kept apart from the optimizer and the loop: DP-SGD clips each example's gradient instead.
#pragma once
#include <cstddef>

namespace bd {

// sqrt(Σ g²), accumulated in double.
double l2_norm(const float* values, size_t n);

// Scales grads by min(1, max_norm / (norm + 1e-6)) and returns the norm before clipping.
// max_norm <= 0 disables clipping (the norm is still returned).
double clip_grad_norm(float* grads, size_t n, double max_norm);

}  // namespace bd
