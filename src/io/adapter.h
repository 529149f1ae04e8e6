// The BitDelta adapter file (.bitdelta): a safetensors file holding, for each compressed weight
// W, `W.sign` (U8 [O, ceil(I/8)]) and `W.scale` (F32 [1] or [O]), and for each tensor kept
// exactly, `W.delta` (the checkpoint's dtype and shape). docs/format.md documents every field.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace bd {

class Checkpoint;
class SafetensorsFile;

inline constexpr int kAdapterFormatVersion = 1;

// What __metadata__ records (all strings in the file).
struct AdapterInfo {
  int version = kAdapterFormatVersion;
  std::string base_fingerprint;      // fingerprint of the base checkpoint (64 hex)
  std::string finetune_fingerprint;  // fingerprint of the fine-tuned checkpoint
  std::string owner;                 // owner DID (did:lux:...), may be empty
  std::string scale_mode;            // "mean" | "distill"
  std::string granularity;           // "matrix" | "row"
  std::string privacy;               // JSON text of privacy spent, empty when none was carried
  std::string tool_version;          // bitdelta version that wrote it
  std::string created;               // UTC, ISO 8601 (2026-11-27T10:00:00Z)
  std::map<std::string, std::string> extra;  // further namespaced keys (e.g. distillation facts)
};

// One compressed linear weight: W ≈ W_base + scale ⊙ S (scale per row or per matrix).
struct AdapterMatrix {
  std::string name;  // the checkpoint's tensor name, e.g. model.layers.0.mlp.up_proj.weight
  int64_t out = 0, in = 0;
  TensorView sign;   // U8 [out, ceil(in/8)]
  TensorView scale;  // F32 [1] (matrix) or [out] (row)
  bool per_row() const { return scale.numel() != 1; }  // out == 1: either reading is the same
};

// One tensor kept exactly: W_finetune = W_base + delta (in the checkpoint's dtype).
struct AdapterExact {
  std::string name;
  TensorView delta;
};

// A validated, memory-mapped adapter. Rejects unknown format versions, missing or mis-shaped
// tensors, and anything it does not understand, with one message naming the file.
class AdapterFile {
 public:
  explicit AdapterFile(const std::string& path);
  ~AdapterFile();
  const std::string& path() const;
  const AdapterInfo& info() const { return info_; }
  const std::vector<AdapterMatrix>& matrices() const { return matrices_; }
  const std::vector<AdapterExact>& exact() const { return exact_; }
  const AdapterMatrix* find_matrix(const std::string& name) const;
  const AdapterExact* find_exact(const std::string& name) const;
  // Throws unless `base` has the adapter's base fingerprint and every tensor it names with the
  // matching shape (and dtype, for exact deltas).
  void check_base(const Checkpoint& base) const;

 private:
  std::unique_ptr<SafetensorsFile> file_;
  AdapterInfo info_;
  std::vector<AdapterMatrix> matrices_;
  std::vector<AdapterExact> exact_;
};

// Writes an adapter atomically (refuses an existing path unless overwrite); the views point to
// caller-owned memory.
void write_adapter(const std::string& path, const AdapterInfo& info,
                   const std::vector<AdapterMatrix>& matrices,
                   const std::vector<AdapterExact>& exact, bool overwrite);

}  // namespace bd
