// `bitdelta soup`: n adapters of one base aggregated into one, streaming. Pass 1 (only what the
// rule needs) reads every input once for the contributions' Gram matrix (vector rules) and their
// mean |δ| per tensor (sign rules); pass 2 reads them again, aggregates block by block, and packs
// the output's signs (bit output) or keeps its values (dense output). Memory: the inputs are
// memory-mapped and read in blocks of n × kSoupBlockCoordinates floats per thread, plus the
// output adapter (dense output: every aggregated tensor in the base's dtype).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "soup/rules.h"
#include "soup/soup_inputs.h"

namespace bd {

// Coordinates per block (whole rows, at least one) that one thread reads from every input.
inline constexpr int64_t kSoupBlockCoordinates = int64_t(1) << 15;

struct SoupOptions {
  SoupParams params;
  bool dense = false;    // write the aggregate exactly (.delta tensors) instead of signs + scales
  bool per_row = false;  // bit output and sign rules: scales per output row, else per matrix
  bool quiet = false;    // no progress line
};

struct SoupExclusion {
  int64_t contribution = 0;  // canonical index
  std::string reason;
};

struct SoupReport {
  std::string version;  // SHA-256 fingerprint of the output's tensors
  VectorChoice choice;  // vector rules
  std::vector<SoupExclusion> excluded;
  int64_t coordinates = 0;
  int64_t input_bytes = 0;  // bytes of input tensors read, all passes
  double seconds = 0;
};

// Aggregates `inputs` (which must all have `base`'s fingerprint and fit its tensors) and writes
// the adapter to `out` atomically (refused if it exists unless overwrite). Throws bd::Error.
SoupReport make_soup(const SoupInputs& inputs, const Checkpoint& base, const SoupOptions& options,
                     const std::string& out, bool overwrite);

}  // namespace bd
