// RMSNorm (Llama): out = x / sqrt(mean(x²) + eps) * weight, row by row, in F32.
#pragma once
#include <cstdint>

namespace bd {

// out[N, C] = in[N, C] * inv_rms[N] * weight[C], inv_rms[n] = 1 / sqrt(mean_c(in[n, c]²) + eps).
// inv_rms is saved for the backward pass; pass nullptr when it is not needed. out may alias in.
void rmsnorm_forward(float* out, float* inv_rms, const float* in, const float* weight, int64_t N,
                     int64_t C, float eps);

// din[N, C] += ∂L/∂in and dweight[C] += ∂L/∂weight, given dout[N, C] and the forward's in and
// inv_rms. Accumulates (the residual stream adds its own gradient to din). dweight may be null
// (no weight gradient, e.g. when only a delta overlay's scales are trained).
void rmsnorm_backward(float* din, float* dweight, const float* dout, const float* in,
                      const float* weight, const float* inv_rms, int64_t N, int64_t C);

}  // namespace bd
