#include "model/llama_params.h"

#include <cmath>
#include <map>
#include <numbers>
#include <random>

#include "core/error.h"
#include "io/checkpoint.h"

namespace bd {

namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Standard normal samples by Box-Muller over 53-bit uniforms: unlike std::normal_distribution,
// the sequence is the same with every standard library.
class NormalSource {
 public:
  explicit NormalSource(uint64_t seed) : rng_(seed) {}
  float next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = double((rng_() >> 11) + 1) * 0x1.0p-53;  // (0, 1]
    const double u2 = double(rng_() >> 11) * 0x1.0p-53;        // [0, 1)
    const double radius = std::sqrt(-2.0 * std::log(u1)), angle = 2 * std::numbers::pi * u2;
    spare_ = float(radius * std::sin(angle));
    has_spare_ = true;
    return float(radius * std::cos(angle));
  }

 private:
  std::mt19937_64 rng_;
  float spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace

LlamaParams::LlamaParams(const LlamaConfig& config) : config_(config) {
  check_llama_config(config, "model config");
  size_t offset = 0;
  for (TensorSpec& spec : llama_tensor_specs(config)) {
    const size_t numel = size_t(shape_numel(spec.shape));
    slices_.push_back({std::move(spec.name), std::move(spec.shape), offset, numel});
    offset += numel;
  }
  values_.assign(offset, 0.0f);
}

LlamaParams LlamaParams::from_checkpoint(const Checkpoint& checkpoint) {
  validate_llama_tensors(checkpoint);
  LlamaParams params(checkpoint.config());
  for (const ParamSlice& slice : params.slices_) {
    const TensorView& view = checkpoint.get(slice.name);
    to_f32(view.dtype, view.data, params.values_.data() + slice.offset, slice.numel);
  }
  return params;
}

void LlamaParams::init_random(uint64_t seed) {
  const float std_dev = 0.02f;
  // Each residual branch adds into the stream twice per layer: keep the stream's variance
  // independent of depth (GPT-2).
  const float residual_std = std_dev / std::sqrt(2.0f * float(config_.num_hidden_layers));
  NormalSource normal(seed);
  for (const ParamSlice& slice : slices_) {
    float* values = values_.data() + slice.offset;
    if (slice.shape.size() == 1) {  // norm weights
      std::fill(values, values + slice.numel, 1.0f);
      continue;
    }
    const bool residual =
        ends_with(slice.name, "o_proj.weight") || ends_with(slice.name, "down_proj.weight");
    const float scale = residual ? residual_std : std_dev;
    for (size_t i = 0; i < slice.numel; ++i) values[i] = scale * normal.next();
  }
}

void LlamaParams::zero() {
  std::fill(values_.begin(), values_.end(), 0.0f);
}

float* LlamaParams::find(const std::string& name) {
  for (const ParamSlice& slice : slices_)
    if (slice.name == name) return values_.data() + slice.offset;
  return nullptr;
}

const float* LlamaParams::find(const std::string& name) const {
  return const_cast<LlamaParams*>(this)->find(name);
}

std::vector<NamedTensor> LlamaParams::named_tensors() const {
  std::vector<NamedTensor> tensors;
  for (const ParamSlice& slice : slices_)
    tensors.push_back({slice.name, TensorView{DType::F32, slice.shape, data() + slice.offset}});
  return tensors;
}

LlamaWeights LlamaParams::weights() const {
  std::map<std::string, TensorView> views;
  for (NamedTensor& tensor : named_tensors()) views[tensor.name] = tensor.view;
  return make_llama_weights(config_, "parameters",
                            [&](const std::string& name) -> const TensorView* {
                              auto it = views.find(name);
                              return it == views.end() ? nullptr : &it->second;
                            });
}

}  // namespace bd
