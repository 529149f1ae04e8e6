#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/parallel.h"

namespace bd {

float cross_entropy_forward(float* lse, int64_t* count, const float* logits, const int32_t* targets,
                            int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] >= V)
      fail("target id ", targets[n], " at position ", n, " is outside the vocabulary [0, ", V, ")");
  double total = 0;
  int64_t counted = 0;
#pragma omp parallel for reduction(+ : total, counted) if (N * V >= kMinParallelWork)
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits + n * V;
    const float max_logit = *std::max_element(row, row + V);
    double sum = 0;
    for (int64_t i = 0; i < V; ++i) sum += std::exp(double(row[i] - max_logit));
    const double row_lse = double(max_logit) + std::log(sum);
    lse[n] = float(row_lse);
    if (targets[n] < 0) continue;
    total += row_lse - row[targets[n]];
    ++counted;
  }
  *count = counted;
  return counted ? float(total / double(counted)) : 0.0f;
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V, float scale) {
#pragma omp parallel for if (N * V >= kMinParallelWork)
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits + n * V;
    float* grad = dlogits + n * V;
    if (targets[n] < 0) {
      std::fill(grad, grad + V, 0.0f);
      continue;
    }
    for (int64_t i = 0; i < V; ++i) grad[i] = scale * std::exp(row[i] - lse[n]);
    grad[targets[n]] -= scale;
  }
}

}  // namespace bd
