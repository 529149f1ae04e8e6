// Owned F32 parameters of a Llama model for training: one flat buffer, sliced into the HF
// tensors in model order. Gradients and optimizer moments use the same class and layout.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/llama_config.h"
#include "io/safetensors.h"
#include "model/llama.h"

namespace bd {

struct ParamSlice {
  std::string name;  // HF tensor name
  Shape shape;
  size_t offset;  // in floats, into data()
  size_t numel;
};

class LlamaParams {
 public:
  explicit LlamaParams(const LlamaConfig& config);  // all zeros
  // The checkpoint's tensors widened to F32 (validated against its config).
  static LlamaParams from_checkpoint(const Checkpoint& checkpoint);

  // GPT-style initialisation: matrices and the embedding ~ N(0, 0.02²), the residual projections
  // (o_proj, down_proj) ~ N(0, (0.02/sqrt(2L))²), norm weights = 1. Deterministic for a seed on
  // every platform (std::mt19937_64 and a Box-Muller transform of our own).
  void init_random(uint64_t seed);
  void zero();

  const LlamaConfig& config() const { return config_; }
  float* data() { return values_.data(); }
  const float* data() const { return values_.data(); }
  size_t size() const { return values_.size(); }
  const std::vector<ParamSlice>& slices() const { return slices_; }
  // The slice's values, or nullptr when this model has no tensor of that name.
  float* find(const std::string& name);
  const float* find(const std::string& name) const;

  // F32 views into this buffer (valid while this object lives; moves keep them valid).
  LlamaWeights weights() const;
  // Named F32 views, in model order, e.g. for write_safetensors / save_checkpoint.
  std::vector<NamedTensor> named_tensors() const;

 private:
  LlamaConfig config_;
  std::vector<ParamSlice> slices_;
  std::vector<float> values_;
};

}  // namespace bd
