// safetensors files (https://github.com/huggingface/safetensors): read through a memory map
// with every header field validated before use, and written atomically.
//
// Layout: u64 little-endian header size N, N bytes of JSON header (may be padded with spaces),
// then the data section. The header maps tensor names to {dtype, shape, data_offsets [begin,
// end)} relative to the data section, plus an optional "__metadata__" string -> string map.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace bd {

struct NamedTensor {
  std::string name;
  TensorView view;
};

// Largest header accepted: a guard against hostile sizes (the reference implementation uses
// the same bound).
inline constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;
// Largest rank and extent accepted. Non-empty tensors are bounded by the file's size anyway;
// these bound the empty ones (a [0, 2^62] tensor holds no bytes), so that any product of two
// extents fits in int64.
inline constexpr size_t kMaxTensorRank = 8;
inline constexpr uint64_t kMaxTensorExtent = uint64_t(1) << 31;

class SafetensorsFile {
 public:
  // Maps and validates the whole header; throws bd::Error "<path>: <problem> (tensor '<name>')".
  explicit SafetensorsFile(const std::string& path);

  // Tensor names in file order, i.e. the order of their bytes in the data section.
  const std::vector<std::string>& names() const { return names_; }
  const TensorView* find(const std::string& name) const;  // nullptr if absent
  const TensorView& get(const std::string& name) const;   // throws "<path>: no tensor '<name>'"
  std::vector<NamedTensor> tensors() const;               // views in file order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  // The file as it was opened and mapped.
  const FileIdentity& identity() const { return file_->identity(); }
  // Where a view's bytes lie in the file, for reading them with pread (core/file_reader.h);
  // nullopt for a view not in the map (a heap copy of an unaligned tensor).
  std::optional<uint64_t> file_offset(const TensorView& view) const;

 private:
  std::string path_;
  std::unique_ptr<MappedFile> file_;
  // Heap copies of the tensors whose bytes are not aligned to their dtype in the map (a writer
  // that did not pad its header), so that every view is safely aligned. The copy is announced on
  // stderr with the file and the bytes copied.
  std::vector<std::vector<uint64_t>> aligned_copies_;
  std::vector<std::string> names_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file atomically (temp file, fsync, rename). The data section holds the
// tensors ordered by dtype size (largest first), then by name, so every tensor is aligned to
// its dtype when the header is padded with spaces to a multiple of 8 bytes, as done here.
// Refuses to replace an existing file unless `overwrite`. Throws bd::Error naming the path and
// tensor for duplicate or empty names, negative dimensions or a missing data pointer.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata, bool overwrite);

// Where write_safetensors puts everything: the bytes before the data section (the size and the
// padded JSON header) and each tensor's offset in the file. Only the views' shapes and dtypes
// are read (a file written by several processes, each holding some of the tensors' data).
struct SafetensorsLayout {
  std::string head;                         // u64 header size + header JSON, padded
  std::map<std::string, uint64_t> offsets;  // tensor name → offset of its bytes in the file
  uint64_t file_size = 0;
};
SafetensorsLayout safetensors_layout(const std::string& path,
                                     const std::vector<NamedTensor>& tensors,
                                     const std::map<std::string, std::string>& metadata);

}  // namespace bd
