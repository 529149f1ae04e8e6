// AdamW with decoupled weight decay on flat F32 master weights, with PyTorch's semantics
// (torch.optim.AdamW, amsgrad off): decay first, then the bias-corrected Adam update.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace bd {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

// A contiguous run of parameters that shares one weight-decay choice (e.g. one tensor).
// Frozen segments are never updated (their moments stay zero).
struct ParamSegment {
  size_t offset = 0;
  size_t size = 0;
  bool decay = true;
  bool frozen = false;
};

class AdamW {
 public:
  // `segments` cover [0, num_params) without gaps or overlaps (checked); one segment with
  // decay on covers everything when the list is empty.
  AdamW(size_t num_params, const AdamWConfig& config, std::vector<ParamSegment> segments = {});

  // One update at learning rate `lr`, for every parameter i not frozen (t = steps() after the
  // call):
  //   p -= lr·wd·p  (decayed segments only)
  //   m = β1·m + (1-β1)·g ;  v = β2·v + (1-β2)·g²
  //   p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)
  void step(float* params, const float* grads, float lr);

  int64_t steps() const { return step_count_; }
  const std::vector<ParamSegment>& segments() const { return segments_; }
  size_t num_params() const { return first_moment_.size(); }
  const AdamWConfig& config() const { return config_; }

 private:
  AdamWConfig config_;
  std::vector<ParamSegment> segments_;
  std::vector<float> first_moment_;   // m
  std::vector<float> second_moment_;  // v
  int64_t step_count_ = 0;
};

}  // namespace bd
