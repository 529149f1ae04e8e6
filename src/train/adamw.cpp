#include "train/adamw.h"

#include <cmath>

#include "core/error.h"
#include "kernels/parallel.h"

namespace bd {

AdamW::AdamW(size_t num_params, const AdamWConfig& config, std::vector<ParamSegment> segments)
    : config_(config),
      segments_(std::move(segments)),
      first_moment_(num_params, 0.0f),
      second_moment_(num_params, 0.0f) {
  if (segments_.empty()) segments_.push_back({0, num_params, true});
  size_t covered = 0;
  for (const ParamSegment& segment : segments_) {
    if (segment.offset != covered)
      fail("AdamW: parameter segment at offset ", segment.offset,
           " leaves a gap or overlaps (expected ", covered, ")");
    covered += segment.size;
  }
  if (covered != num_params)
    fail("AdamW: parameter segments cover ", covered, " of ", num_params, " parameters");
  if (!(config_.beta1 >= 0 && config_.beta1 < 1) || !(config_.beta2 >= 0 && config_.beta2 < 1))
    fail("AdamW: betas must lie in [0, 1), got ", config_.beta1, ", ", config_.beta2);
  if (!(config_.eps > 0)) fail("AdamW: eps must be positive, got ", config_.eps);
  if (!(config_.weight_decay >= 0))
    fail("AdamW: weight decay must be >= 0, got ", config_.weight_decay);
}

void AdamW::step(float* params, const float* grads, float lr) {
  ++step_count_;
  const float beta1 = config_.beta1, beta2 = config_.beta2, eps = config_.eps;
  // The bias corrections in double: β^t underflows gracefully and 1-β^t keeps its digits.
  const double correction1 = 1.0 - std::pow(double(beta1), double(step_count_));
  const double correction2 = 1.0 - std::pow(double(beta2), double(step_count_));
  const float step_size = float(lr / correction1);
  const float inv_sqrt_correction2 = float(1.0 / std::sqrt(correction2));
  float* m = first_moment_.data();
  float* v = second_moment_.data();
  for (const ParamSegment& segment : segments_) {
    if (segment.frozen) continue;
    const float keep = segment.decay ? 1.0f - lr * config_.weight_decay : 1.0f;
    const int64_t begin = int64_t(segment.offset), end = int64_t(segment.offset + segment.size);
#pragma omp parallel for schedule(static) if (end - begin >= kMinParallelWork)
    for (int64_t i = begin; i < end; ++i) {
      const float g = grads[i];
      m[i] = beta1 * m[i] + (1.0f - beta1) * g;
      v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
      const float denom = std::sqrt(v[i]) * inv_sqrt_correction2 + eps;
      params[i] = params[i] * keep - step_size * m[i] / denom;
    }
  }
}

}  // namespace bd
