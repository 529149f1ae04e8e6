// A base model with an adapter applied inside the forward, never merged: every compressed
// linear gets a sign-delta overlay (y = W·x + γ ⊙ (S·x)), and the few tensors kept exactly
// (norms, embeddings) are materialised as base + delta in F32.
#pragma once
#include <memory>
#include <vector>

#include "io/adapter.h"
#include "io/checkpoint.h"
#include "model/llama.h"

namespace bd {

class DeltaWeights {
 public:
  // `scales[i]` overrides the scale of matrices[i] when given (distillation trains them);
  // otherwise the adapter's own scales are used. Checks that the adapter fits the base.
  DeltaWeights(const Checkpoint& base, const std::vector<AdapterMatrix>& matrices,
               const std::vector<AdapterExact>& exact, const std::vector<float*>& scales = {});
  // The same for an adapter file, after AdapterFile::check_base (fingerprint, names, shapes).
  DeltaWeights(const Checkpoint& base, const AdapterFile& adapter);
  // weights() views buffers owned here: moving keeps them valid, copying would not.
  DeltaWeights(const DeltaWeights&) = delete;
  DeltaWeights& operator=(const DeltaWeights&) = delete;
  DeltaWeights(DeltaWeights&&) = default;
  DeltaWeights& operator=(DeltaWeights&&) = default;

  const LlamaWeights& weights() const { return weights_; }

 private:
  LlamaWeights weights_;
  std::vector<std::vector<float>> materialised_;  // base + exact delta, F32
  std::vector<TensorView> materialised_views_;
};

}  // namespace bd
