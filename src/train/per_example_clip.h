// DP-SGD's per-example clipping. After a training forward over B examples (one window of T
// tokens each), it finds each example's gradient g_i (of the mean loss over the example's own
// tokens), its L2 norm over every trainable tensor together, and adds
//   Σ_i min(1, C / (‖g_i‖ + 1e-6)) · g_i
// to a gradient buffer: the clipped sum, to which DP-SGD then adds noise.
//
// Two ways, same numbers (tests/dp_sgd_test.cpp):
// - ghost (default): one backward pass without parameter gradients records every linear's
//   input X and output gradient dY; a linear's per-example gradient is dY_iᵀ X_i, whose squared
//   norm is Σ_{t,s} (X_t·X_s)(dY_t·dY_s) (ghost clipping, Li et al. 2021, "Large Language
//   Models Can Be Strong Differentially Private Learners"), from two T×T Gram matrices; or, where
//   T(I + O)/2 > I·O makes that dearer, from dY_iᵀ X_i itself (mixed ghost clipping, Bu et al.
//   2022). Then each linear's clipped sum is one product (c ⊙ dY)ᵀ X with the rows of dY scaled
//   by their example's clip factor c_i (book-keeping, Bu et al. 2023, "Differentially Private
//   Optimization on Large Model at Small Cost"): no per-example gradient is kept and there is no
//   second backward pass. Norm weights' per-example gradients are C numbers each and are
//   materialised; the embedding's per-example norm groups the example's tokens, with the cross
//   term against the head when the two are tied.
// - materialized: Opacus's way, every example's whole gradient written out (B × parameters
//   floats), normed and summed. The benchmark's baseline and the tests' second opinion.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "model/llama.h"
#include "model/llama_params.h"

namespace bd {

enum class PerExampleMethod { ghost, materialized };

struct ClipStats {
  std::vector<double> norms;  // ‖g_i‖ of each example, before clipping
  int64_t clipped = 0;        // examples whose norm exceeded C
};

class PerExampleClipper final : private LinearBackwardObserver {
 public:
  // Buffers for up to max_examples windows of seq tokens. `frozen`: names of the tensors that do
  // not train (they take no part in the norms or the sum).
  PerExampleClipper(const LlamaConfig& config, std::set<std::string> frozen, int64_t max_examples,
                    int64_t seq, PerExampleMethod method);

  // Needs the last forward_train over acts (acts.B examples of acts.T = seq tokens, every target
  // counted). Overwrites its logits and scratch (backward), adds the clipped sum into *grads and
  // returns the norms. Throws bd::Error for activations of another shape.
  ClipStats clip_and_accumulate(const LlamaWeights& weights, TrainActivations& acts,
                                double max_norm, LlamaParams& grads);

 private:
  struct RecordedLinear {
    std::string name;
    const float* x;  // [rows, I] the forward's input, kept in the activations
    float* dy;       // [rows, O] a copy (or acts.logits for the head, which backward keeps)
    int64_t in, out;
    bool ghost;      // norm from Gram matrices, else from the materialised dY_iᵀ X_i
    int64_t x_gram;  // ghost: which of the shared inputs' Gram matrices is X's
  };
  struct RecordedNorm {
    std::string name;
    float* per_example;  // [B, C] each example's gradient of the norm weight
  };

  void on_linear(const std::string& name, const float* X, const float* dY, int64_t rows, int64_t in,
                 int64_t out) override;
  void on_norm(const std::string& name, const float* X, const float* inv_rms, const float* dY,
               int64_t rows, int64_t dim) override;

  std::vector<double> ghost_norms2(const TrainActivations& acts);
  void add_embedding_norms2(const TrainActivations& acts, std::vector<double>& norms2) const;
  std::vector<double> materialized_norms2(const TrainActivations& acts, LlamaParams& grads);
  void accumulate_ghost(TrainActivations& acts, const std::vector<float>& factors,
                        LlamaParams& grads);
  void accumulate_materialized(const std::vector<float>& factors, int64_t examples,
                               LlamaParams& grads);

  LlamaConfig config_;
  std::set<std::string> frozen_;
  int64_t max_examples_, seq_;
  PerExampleMethod method_;
  const float* logits_ = nullptr;  // acts.logits during the backward pass
  std::vector<float> dy_store_;    // copies of every linear's dY but the head's
  size_t dy_used_ = 0;
  std::vector<float> norm_store_;  // per-example norm-weight gradients
  size_t norm_used_ = 0;
  std::vector<RecordedLinear> linears_;
  std::vector<RecordedNorm> norms_;
  std::vector<float> x_grams_;      // ghost: [shared inputs, B, T, T] upper triangles
  std::vector<float> per_example_;  // materialized: [max_examples, parameters]
};

}  // namespace bd
