#include "kernels/swiglu.h"

#include <cmath>

#include "kernels/parallel.h"

namespace bd {

void swiglu_forward(float* act, const float* gate, const float* up, int64_t N) {
#pragma omp parallel for simd if (parallel : N >= kMinParallelWork)
  for (int64_t i = 0; i < N; ++i) {
    const float g = gate[i];
    act[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

// d silu(g)/dg = σ(g)·(1 + g·(1 - σ(g))).
void swiglu_backward(float* dgate, float* dup, const float* dact, const float* gate,
                     const float* up, int64_t N) {
#pragma omp parallel for simd if (parallel : N >= kMinParallelWork)
  for (int64_t i = 0; i < N; ++i) {
    const float g = gate[i];
    const float sig = 1.0f / (1.0f + std::exp(-g));
    dgate[i] = dact[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
    dup[i] = dact[i] * g * sig;
  }
}

}  // namespace bd
