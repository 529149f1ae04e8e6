// Short vector loops the attention kernels share (head_dim-sized rows, vectorized by the
// compiler with `omp simd`).
#pragma once
#include <cstdint>

namespace bd {

// Σ a[i]·b[i] over n elements.
inline float dot(const float* a, const float* b, int64_t n) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y[n] += alpha · x[n]
inline void axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace bd
