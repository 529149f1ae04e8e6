#include "kernels/rmsnorm.h"

#include <cmath>

#include "kernels/parallel.h"

namespace bd {

void rmsnorm_forward(float* out, float* inv_rms, const float* in, const float* weight, int64_t N,
                     int64_t C, float eps) {
#pragma omp parallel for if (N > 1 && N * C >= kMinParallelWork)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = in + n * C;
    double sum_sq = 0;  // double: C can be thousands of terms
    for (int64_t c = 0; c < C; ++c) sum_sq += double(x[c]) * x[c];
    const float r = float(1.0 / std::sqrt(sum_sq / double(C) + double(eps)));
    float* y = out + n * C;
    for (int64_t c = 0; c < C; ++c) y[c] = x[c] * r * weight[c];
    if (inv_rms) inv_rms[n] = r;
  }
}

// y = x·r·w with r = (mean(x²) + eps)^(-1/2), so ∂r/∂x_c = -r³·x_c / C and
// dx = r·(dy ⊙ w) - x·r³/C · Σ_c dy_c·w_c·x_c.
void rmsnorm_backward(float* din, float* dweight, const float* dout, const float* in,
                      const float* weight, const float* inv_rms, int64_t N, int64_t C) {
#pragma omp parallel for if (N > 1 && N * C >= kMinParallelWork)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = in + n * C;
    const float* dy = dout + n * C;
    const float r = inv_rms[n];
    double dot = 0;
    for (int64_t c = 0; c < C; ++c) dot += double(dy[c]) * weight[c] * x[c];
    const float coeff = float(dot) * r * r * r / float(C);
    float* dx = din + n * C;
    for (int64_t c = 0; c < C; ++c) dx[c] += r * dy[c] * weight[c] - coeff * x[c];
  }
  if (!dweight) return;
  // Serial over rows so no two threads add into the same dweight[c]; N·C work is small next to
  // the matmuls around it.
  for (int64_t n = 0; n < N; ++n) {
    const float* x = in + n * C;
    const float* dy = dout + n * C;
    const float r = inv_rms[n];
    for (int64_t c = 0; c < C; ++c) dweight[c] += dy[c] * x[c] * r;
  }
}

}  // namespace bd
