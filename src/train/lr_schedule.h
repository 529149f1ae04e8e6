// Learning-rate schedule: linear warm-up, then cosine decay to a floor.
#pragma once
#include <cstdint>

namespace bd {

struct LrSchedule {
  double peak_lr = 1e-3;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.1;  // the floor, as a fraction of peak_lr

  // The rate for 0-based step `step`:
  //   step < warmup:  peak · (step + 1) / warmup
  //   afterwards:     floor + (peak - floor) · (1 + cos(π · p)) / 2,
  //                   p = (step - warmup) / (total - warmup), clamped to [0, 1]
  // so the first decayed step runs at the peak and the rate nears the floor at the end.
  double lr_at(int64_t step) const;

  void validate() const;  // throws bd::Error naming the bad field
};

}  // namespace bd
