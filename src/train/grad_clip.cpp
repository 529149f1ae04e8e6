#include "train/grad_clip.h"

#include <cmath>
#include <cstdint>

#include "kernels/parallel.h"

namespace bd {

double l2_norm(const float* values, size_t n) {
  double sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static) if (int64_t(n) >= kMinParallelWork)
  for (int64_t i = 0; i < int64_t(n); ++i) sum += double(values[i]) * double(values[i]);
  return std::sqrt(sum);
}

double clip_grad_norm(float* grads, size_t n, double max_norm) {
  const double norm = l2_norm(grads, n);
  if (max_norm <= 0) return norm;
  // The 1e-6 guard is PyTorch's, so the clip coefficient is the one it computes.
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return norm;
  const float scale = float(coef);
#pragma omp parallel for schedule(static) if (int64_t(n) >= kMinParallelWork)
  for (int64_t i = 0; i < int64_t(n); ++i) grads[i] *= scale;
  return norm;
}

}  // namespace bd
