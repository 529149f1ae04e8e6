// One adapter's changes to a base model, kept apart from the base weights so that one batch can
// hold rows of many adapters (and of the base alone). The forward takes its rows grouped into
// RowSegments; each linear runs one base product over every row, then each segment's own delta
// on its rows: y += γ ⊙ (S·x) from packed sign bits, or x·Δᵀ for a tensor kept exactly. Norm and
// embedding deltas are added per segment the same way, so nothing is copied per adapter.
//
// A LlamaDelta is a set of views (into a memory-mapped adapter file, or into scales being
// distilled): a served adapter costs its file's pages and this small table, no F32 copy.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/sign_matmul.h"

namespace bd {

class AdapterFile;
class Checkpoint;
struct AdapterMatrix;
struct AdapterExact;
struct LlamaWeights;

// W_effective = W + γ ⊙ S with S ∈ {−1, +1}[O, I] read from packed bits (layout in
// kernels/sign_matmul.h) and γ per output row or one per matrix.
struct SignDelta {
  const uint8_t* bits = nullptr;  // [O, sign_row_bytes(I)]
  const float* scale = nullptr;   // [O] when per_row, else [1]
  bool per_row = false;
  const uint8_t* tiles = nullptr;  // optional: bits in the lookup kernel's layout (sign_matmul.h)
};

// What an adapter changes in one linear layer: nothing, its signs and scales, or (a tensor the
// adapter keeps exactly) W_effective = W + Δ with Δ [O, I] in F32, BF16 or F16.
struct LinearDelta {
  SignDelta sign;    // sign.bits == nullptr: none
  TensorView exact;  // exact.data == nullptr: none
  bool empty() const { return !sign.bits && !exact.data; }
};

struct LlamaDelta {
  TensorView embed;                  // [V, C] exact delta of the embedding, or empty
  std::vector<TensorView> norms;     // by norm slot (below): [C] exact deltas, or empty views
  std::vector<LinearDelta> linears;  // by Linear::slot: every block projection, then the head

  const TensorView& norm(int64_t slot) const { return norms[size_t(slot)]; }
  const LinearDelta& linear(int64_t slot) const { return linears[size_t(slot)]; }
};

// Norm slots: layer l's input norm is 2l, its post-attention norm 2l + 1, the final norm 2L.
inline int64_t attn_norm_slot(int64_t layer) {
  return 2 * layer;
}
inline int64_t mlp_norm_slot(int64_t layer) {
  return 2 * layer + 1;
}
inline int64_t final_norm_slot(int64_t layers) {
  return 2 * layers;
}

// Rows [row0, row0 + rows) of a batch, all run with `delta` (nullptr: the base alone). Up to
// lookup_max_rows rows, its signs take the quantized table lookups (kernels/sign_matmul.h); more
// rows multiply by W + γ·S exactly.
struct RowSegment {
  int64_t row0 = 0, rows = 0;
  const LlamaDelta* delta = nullptr;
  int64_t lookup_max_rows = kSignGemvMaxTokens;
};
using Segments = std::span<const RowSegment>;

// The delta of an adapter's tensors for `base` (every name, shape and dtype checked; a tied head
// gets the embedding's delta). `scales[i]`, when given, replaces the scale of matrices[i]
// (distillation trains them through these views); otherwise the adapter's own are used.
// `source` names the base in errors.
LlamaDelta make_llama_delta(const LlamaWeights& base, const std::string& source,
                            const std::vector<AdapterMatrix>& matrices,
                            const std::vector<AdapterExact>& exact,
                            const std::vector<float*>& scales = {});
// The same for an adapter file, after AdapterFile::check_base (fingerprint, names, shapes).
LlamaDelta make_llama_delta(const LlamaWeights& base, const Checkpoint& checkpoint,
                            const AdapterFile& adapter);

}  // namespace bd
