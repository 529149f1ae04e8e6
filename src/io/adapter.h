// The BitDelta adapter file (.bitdelta): a safetensors file holding, for each compressed weight
// W, `W.sign` (U8 [O, ceil(I/8)]) and `W.scale` (F32 [1] or [O]), and for each tensor kept
// exactly, `W.delta` (the checkpoint's dtype and shape). docs/format.md documents every field.
#pragma once
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/atomic_file.h"
#include "core/tensor.h"
#include "io/safetensors.h"

namespace bd {

class Checkpoint;
class SafetensorsFile;

inline constexpr int kAdapterFormatVersion = 1;
// Largest out or in of a compressed weight (the largest Llama matrix is the head, [vocabulary,
// hidden], and config.json's limits cap both at 2^24): bounded before any size arithmetic, so
// out·in and out·ceil(in/8) fit in int64 with room to spare.
inline constexpr int64_t kMaxAdapterExtent = int64_t(1) << 24;

// What __metadata__ records (all strings in the file, under the keys docs/format.md lists:
// bitdelta.format_version, bitdelta.base_fingerprint, ...; the compressed weights' shapes go in
// bitdelta.shapes, and `extra` holds every key outside the bitdelta. namespace).
struct AdapterInfo {
  int version = kAdapterFormatVersion;
  std::string base_fingerprint;      // fingerprint of the base checkpoint (64 hex)
  std::string finetune_fingerprint;  // fingerprint of the fine-tuned checkpoint
  std::string owner;                 // owner DID (did:lux:...), may be empty
  std::string scale_mode;            // "mean" | "distill"
  std::string granularity;           // "matrix" | "row"
  std::string privacy;       // JSON object text {"privacy.<key>": "<value>", ...} copied from the
                             // fine-tune's metadata; empty when it carried none
  std::string tool_version;  // bitdelta version that wrote it
  std::string created;       // UTC, ISO 8601 (2026-11-27T10:00:00Z)
  std::map<std::string, std::string> extra;  // further namespaced keys (e.g. distillation facts)
};

// One compressed linear weight: W ≈ W_base + scale ⊙ S (scale per row or per matrix).
struct AdapterMatrix {
  std::string name;  // the checkpoint's tensor name, e.g. model.layers.0.mlp.up_proj.weight
  int64_t out = 0, in = 0;
  TensorView sign;                                     // U8 [out, ceil(in/8)]
  TensorView scale;                                    // F32 [1] (matrix) or [out] (row)
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
  const SafetensorsFile& safetensors() const { return *file_; }
  const AdapterMatrix* find_matrix(const std::string& name) const;
  const AdapterExact* find_exact(const std::string& name) const;
  // Throws unless `base` has the adapter's base fingerprint and every tensor it names with the
  // matching shape (and dtype, for exact deltas). `base_fingerprint`: the base's fingerprint when
  // the caller already knows it (a server checking many adapters), else it is looked up.
  void check_base(const Checkpoint& base, const std::string& base_fingerprint = "") const;

 private:
  std::unique_ptr<SafetensorsFile> file_;
  AdapterInfo info_;
  std::vector<AdapterMatrix> matrices_;
  std::vector<AdapterExact> exact_;
};

// An adapter written by several processes (a soup sharded across Open MPI ranks), each writing
// the tensors it computed into one file: one process create()s it, every process
// write_tensors() (those whose views have data here), and the creator commit()s: the version,
// the fingerprint of all the tensors, which no one process holds, is read back from the file
// and written into the header (the same length), and the file is renamed into place. Every
// process constructs it with the same info and shapes. info.finetune_fingerprint is the version.
class SharedAdapterWriter {
 public:
  SharedAdapterWriter(const std::string& path, const AdapterInfo& info,
                      const std::vector<AdapterMatrix>& matrices,
                      const std::vector<AdapterExact>& exact, bool overwrite);
  void create() const;
  void write_tensors() const;
  std::string commit();  // returns the version
  void discard() const;  // removes the unfinished file

 private:
  std::string path_;
  AdapterInfo info_;
  std::vector<AdapterMatrix> matrices_;
  std::vector<NamedTensor> tensors_;
  SharedFile file_;
  SafetensorsLayout layout_;
};

// Sizes of an adapter's parts, for reports (compress --json, inspect).

struct AdapterSizes {
  int64_t compressed_parameters = 0;  // Σ out·in over the sign-compressed weights
  int64_t exact_parameters = 0;       // Σ numel over the tensors kept exactly
  int64_t sign_bytes = 0, scale_bytes = 0, exact_bytes = 0;
  // The same tensors stored as fp16 deltas: 2 bytes per parameter.
  int64_t fp16_compressed_bytes() const { return 2 * compressed_parameters; }
  int64_t fp16_changed_bytes() const { return 2 * (compressed_parameters + exact_parameters); }
  // Compression ratios (docs/format.md): the compressed weights in fp16 ÷ their signs and
  // scales; everything that differs from the base in fp16 ÷ the whole adapter file.
  double ratio_compressed_vs_fp16() const {
    return double(fp16_compressed_bytes()) / double(std::max<int64_t>(1, sign_bytes + scale_bytes));
  }
  double ratio_changed_vs_fp16(int64_t adapter_file_bytes) const {
    return double(fp16_changed_bytes()) / double(std::max<int64_t>(1, adapter_file_bytes));
  }
};
AdapterSizes adapter_sizes(const std::vector<AdapterMatrix>& matrices,
                           const std::vector<AdapterExact>& exact);

// The adapter's version: the fingerprint (io/fingerprint.h) of every tensor in the file, in name
// order; what attestations and soups name an adapter by. Metadata is not part of it. Through
// the machine's fingerprint cache (io/fingerprint_cache.h): a soup of 100 adapters seen before
// hashes none of them again.
std::string adapter_fingerprint(const std::string& path);

// True for an owner the format accepts: "did:lux:" then a non-empty method-specific id of
// letters, digits, '.', '-', '_', %XX escapes and ':' separators, not ending in ':'.
bool valid_owner_did(const std::string& did);

// Writes an adapter atomically (refuses an existing path unless overwrite); the views point to
// caller-owned memory. Checks everything the reader checks first (so it never writes a file
// that AdapterFile would refuse) and throws bd::Error naming the path and the problem.
void write_adapter(const std::string& path, const AdapterInfo& info,
                   const std::vector<AdapterMatrix>& matrices,
                   const std::vector<AdapterExact>& exact, bool overwrite);

}  // namespace bd
