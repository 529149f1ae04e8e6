#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace bd {

double LrSchedule::lr_at(int64_t step) const {
  if (step < warmup_steps) return peak_lr * double(step + 1) / double(warmup_steps);
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress = std::clamp(double(step - warmup_steps) / double(decay_steps), 0.0, 1.0);
  const double floor = peak_lr * min_lr_ratio;
  return floor + (peak_lr - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

void LrSchedule::validate() const {
  if (!(peak_lr > 0) || !std::isfinite(peak_lr))
    fail("learning rate must be a positive number, got ", peak_lr);
  if (total_steps < 1) fail("steps must be at least 1, got ", total_steps);
  if (warmup_steps < 0 || warmup_steps > total_steps)
    fail("warm-up steps must lie in [0, steps=", total_steps, "], got ", warmup_steps);
  if (!(min_lr_ratio >= 0 && min_lr_ratio <= 1))
    fail("minimum learning-rate ratio must lie in [0, 1], got ", min_lr_ratio);
}

}  // namespace bd
