// DeltaSoup's inputs: n adapters of one base, memory-mapped, in a canonical order (by their
// fingerprint, io/adapter.h), read back as dequantised deltas a block of rows at a time. The
// canonical order makes every floating-point sum the same whatever order the files were given
// in, so a soup is byte-identical for the same set of inputs.
//
// Each tensor any input changes is a "soup tensor": a compressed weight (W.sign + W.scale: its
// delta is γ ⊙ S) or a tensor kept exactly (W.delta). An input that left a tensor out (it did
// not change it) contributes zeros there; one input may hold a weight compressed and another
// exactly (a dense soup output), as long as the shapes agree.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/file_reader.h"
#include "core/tensor.h"
#include "io/adapter.h"

namespace bd {

struct SoupContribution {
  std::string path;
  std::string fingerprint;  // of the adapter's tensors (its version)
  std::string owner;        // the adapter's owner DID, may be empty
  std::string privacy;      // its privacy.* record (JSON object text), may be empty
  std::unique_ptr<AdapterFile> file;
  std::unique_ptr<FileReader> reader;  // the same file, for pread; may not be ok()
};

struct SoupTensor {
  std::string name;
  bool compressed = false;     // a linear weight that some input compressed to signs
  int64_t rows = 0, cols = 0;  // [out, in] for weights; [shape[0], rest] for others (1-D: [1, C])
  Shape shape;
  DType dtype = DType::F32;  // an exact tensor's dtype (the base's)
  int64_t numel() const { return rows * cols; }
};

// Coordinates per block (whole rows, at least one) that one thread reads from every input, as
// floats; and bytes per block of packed signs (a pass that reads only signs: 512K coordinates,
// so that reading an input's part of a block is one large pread).
inline constexpr int64_t kSoupBlockCoordinates = int64_t(1) << 15;
inline constexpr int64_t kSoupSignBlockBytes = int64_t(1) << 16;
// Blocks whose partial sums are held at once and then added in block order, so that sums over
// all blocks do not depend on the thread count.
inline constexpr int64_t kSoupWave = 16;
int64_t block_rows(const SoupTensor& tensor);   // rows per block
int64_t block_count(const SoupTensor& tensor);  // blocks of the tensor

class SoupInputs {
 public:
  // Opens every adapter; throws bd::Error (one line, naming the file) for one that is not an
  // adapter, of another base fingerprint than the first, or with a tensor of another shape or
  // dtype than the others. Identical adapters may be given (colluding contributors copy).
  explicit SoupInputs(const std::vector<std::string>& paths);

  int64_t count() const { return int64_t(contributions_.size()); }
  const std::vector<SoupContribution>& contributions() const { return contributions_; }
  const std::vector<SoupTensor>& tensors() const { return tensors_; }  // in name order
  const std::string& base_fingerprint() const { return base_fingerprint_; }
  int64_t coordinates() const;  // Σ numel over the tensors

  // Every contribution's delta of tensor t, rows [row0, row0 + rows): out[k · rows · cols + i]
  // for contribution k (canonical order) and element i of the block.
  void read_block(size_t t, int64_t row0, int64_t rows, float* out) const;

  // Every contribution's sign matrix of tensor t (canonical order), or an empty list when one of
  // them holds it exactly or not at all.
  std::vector<const AdapterMatrix*> sign_matrices(size_t t) const;

  // Contribution k's sign rows [row0, row0 + rows) of tensor t (which it holds as signs),
  // packed as in the file, into out: read with pread (core/file_reader.h), or copied from the
  // map when the file cannot be read that way.
  void read_signs(size_t t, size_t k, int64_t row0, int64_t rows, uint8_t* out) const;
  // Gives back the resident pages of every input's tensor t that a pass touched in the maps
  // (scales, exact tensors), so that resident memory stays bounded by one tensor.
  void release(size_t t) const;

 private:
  // Where contribution k holds tensor t: its sign matrix, its exact delta, or neither (zeros).
  struct Source {
    const AdapterMatrix* matrix = nullptr;
    const AdapterExact* exact = nullptr;
  };

  std::vector<SoupContribution> contributions_;
  std::vector<SoupTensor> tensors_;
  std::vector<std::vector<Source>> sources_;  // [tensor][contribution], looked up once
  std::string base_fingerprint_;
};

}  // namespace bd
