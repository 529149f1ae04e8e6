// BitDelta compression: a fine-tune minus its base, kept as one sign bit per weight of every
// transformer linear (q, k, v, o, gate, up, down) plus a scale per matrix or per output row
// (mean |δ|, the L2-optimal scale for a sign matrix); every other tensor that differs from the
// base is kept exactly as W.delta in its own dtype; tensors equal to the base are left out.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/adapter.h"
#include "io/checkpoint.h"

namespace bd {

struct CompressOptions {
  bool per_row = false;  // one scale per output row instead of one per matrix
  std::string owner;     // did:lux DID recorded as the owner; may be empty
  bool quiet = false;    // no progress line
};

struct CompressStats {
  int64_t tensors = 0;             // tensors in each checkpoint
  int64_t compressed_tensors = 0;  // linear weights that differ from the base: W.sign + W.scale
  int64_t exact_tensors = 0;       // other tensors that differ: W.delta
  int64_t unchanged_tensors = 0;   // equal to the base (δ = 0 everywhere): left out
  // Elements of the W.delta tensors for which base + delta (F32, rounded to the dtype) is not
  // bit for bit the fine-tune's value, because δ itself had to be rounded (docs/format.md).
  int64_t exact_rounded_elements = 0;
  int64_t input_bytes = 0;  // tensor bytes read, both checkpoints together
  // Fingerprints taken from the machine's cache (io/fingerprint_cache.h) instead of hashed.
  bool base_fingerprint_cached = false;
  bool finetune_fingerprint_cached = false;
  double seconds = 0;
};

// An adapter in memory: metadata, and tensors whose views point into buffers this object owns
// (moving it keeps them valid).
class CompressedDelta {
 public:
  AdapterInfo info;
  std::vector<AdapterMatrix> matrices;  // in name order
  std::vector<AdapterExact> exact;      // in name order
  CompressStats stats;

  // Each matrix's scale values (matrices[i].scale), writable: for distill_scales.
  std::vector<float*> scale_pointers();
  // write_adapter() of this delta.
  void write(const std::string& path, bool overwrite) const;

  // Take the buffers and append views of them to matrices / exact.
  void add_matrix(const std::string& name, int64_t out, int64_t in, std::vector<uint8_t> signs,
                  std::vector<float> scales);
  void add_exact(const std::string& name, DType dtype, const Shape& shape,
                 std::vector<uint8_t> delta);

 private:
  std::vector<std::vector<uint8_t>> signs_;
  std::vector<std::vector<float>> scales_;
  std::vector<std::vector<uint8_t>> deltas_;
};

// True for the weights BitDelta compresses:
// model.layers.N.self_attn.{q,k,v,o}_proj.weight and model.layers.N.mlp.{gate,up,down}_proj.weight.
bool is_compressed_weight(const std::string& name);

// Throws bd::Error naming the first difference when the two checkpoints are not the same
// architecture: config.json (torch_dtype aside), tensor names, shapes or dtypes.
void check_same_architecture(const Checkpoint& base, const Checkpoint& finetune);

// Compresses finetune − base, streaming both memory-mapped checkpoints tensor by tensor in name
// order: two threads feed each tensor into its model's fingerprint while the others pack signs
// (row blocks) or compute the exact delta, and each tensor's pages are given back once done, so
// memory holds the signs, the exact deltas and a tensor or two of input, not the models. A
// fingerprint found in the machine's cache (io/fingerprint_cache.h) is not computed again (no
// hashing thread for that model); one computed is stored there.
// Refuses (bd::Error, one line) mismatched checkpoints and deltas holding NaN or ±inf.
// The result's scale mode is "mean"; distill_scales() may then refine its scales.
CompressedDelta compress_delta(const Checkpoint& base, const Checkpoint& finetune,
                               const CompressOptions& options);

}  // namespace bd
