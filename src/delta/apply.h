// Reconstructing the dense fine-tune from a base and an adapter, for users who want a plain
// Hugging Face checkpoint (the engine itself runs base + delta without merging:
// model/llama_delta.h).
//
// Each tensor is computed in F32 and rounded once (nearest even) to the output dtype:
//   compressed weight W:  widen(W_base) + γ ⊙ S      (γ·s is ±γ exactly; one F32 addition)
//   exact tensor W:       widen(W_base) + widen(W.delta)
//   any other tensor:     W_base (converted when the output dtype differs)
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "core/dtype.h"
#include "io/adapter.h"
#include "io/checkpoint.h"

namespace bd {

struct ApplyOptions {
  std::optional<DType> dtype;  // every float tensor in this dtype; nullopt keeps the base's
  bool overwrite = false;      // replace an existing output folder
  bool quiet = false;          // no progress line
};

struct ApplyStats {
  int64_t compressed_tensors = 0;  // rebuilt from signs and scales
  int64_t exact_tensors = 0;       // rebuilt from exact deltas
  int64_t base_tensors = 0;        // taken from the base unchanged
  int64_t output_bytes = 0;        // tensor bytes written
  double seconds = 0;
};

// One tensor of the reconstruction (the rules above) into out (numel × dtype_size(out_dtype)).
void reconstruct_tensor(const TensorView& base, const AdapterMatrix* matrix,
                        const AdapterExact* exact, DType out_dtype, void* out);

// Checks the adapter against the base (its fingerprint, names, shapes: AdapterFile::check_base),
// then writes base + adapter to out_dir (config.json with torch_dtype set to the output dtype,
// model.safetensors with the provenance in its metadata, the base's tokenizer.json). The folder
// is built next to out_dir and renamed into place, so out_dir is complete or untouched.
// Holds the reconstructed tensors in memory until they are written.
ApplyStats apply_adapter(const Checkpoint& base, const AdapterFile& adapter,
                         const std::string& out_dir, const ApplyOptions& options);

}  // namespace bd
