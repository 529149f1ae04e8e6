// `bitdelta soup`: n adapters of one base aggregated into one, streaming. Pass 1 (only what the
// rule needs) reads every input once for the contributions' Gram matrix (vector rules) and their
// mean |δ| per tensor (sign rules); pass 2 reads them again, aggregates block by block, and packs
// the output's signs (bit output) or keeps its values (dense output). Memory: per thread, a
// block of n × kSoupSignBlockBytes of packed signs (weights every input holds as signs) or
// n × kSoupBlockCoordinates floats (the rest), plus the output adapter (dense output: every
// aggregated tensor in the base's dtype).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/progress.h"
#include "io/checkpoint.h"
#include "soup/admission.h"
#include "soup/rules.h"
#include "soup/soup_group.h"
#include "soup/soup_inputs.h"

namespace bd {

struct SoupOptions {
  SoupParams params;
  // When set (one per contribution, canonical order), the output is Σ w_k δ_k and `params` is
  // not used: greedy soups' mixing coefficients. `label` is then the recorded method.
  std::vector<double> fixed_weights;
  std::string label;
  std::map<std::string, std::string> extra_metadata;  // further soup.* keys (greedy, attribution)
  bool dense = false;    // write the aggregate exactly (.delta tensors) instead of signs + scales
  bool per_row = false;  // bit output and sign rules: scales per output row, else per matrix
  bool quiet = false;    // no progress line
  // The processes building this soup together (soup/soup_group.h); null: this one alone.
  const SoupGroup* group = nullptr;
};

struct SoupReport {
  std::string version;  // SHA-256 fingerprint of the output's tensors
  VectorChoice choice;  // vector rules
  // Every input left out, with its reason: those excluded before (admission filters, screening)
  // and those a vector rule did not select.
  std::vector<ExcludedInput> excluded;
  int64_t coordinates = 0;
  int64_t input_bytes = 0;  // bytes of input tensors read, all passes
  double seconds = 0;
};

// Pass 1 over the tensors that are `mine`: each contribution's Σ|δ| per tensor and, when
// `gram`, the Gram matrix G[i][j] = Σ_coordinates δ_i · δ_j in double, each tensor's summed in
// block order and the tensors' in tensor order (the same totals for any thread count and, with
// keep_tensor_grams, for any split of the tensors across processes). Only the upper triangle is
// filled. `done` counts blocks for `progress`.
struct SoupStatistics {
  std::vector<std::vector<double>> abs_sums;     // [tensor][contribution]
  std::vector<double> gram;                      // [n, n], the tensors' sum (not when keeping)
  std::vector<std::vector<double>> tensor_gram;  // [tensor][n, n] with keep_tensor_grams
};
SoupStatistics soup_statistics(const SoupInputs& inputs, bool gram, const std::vector<bool>& mine,
                               bool keep_tensor_grams, Progress& progress, int64_t& done);

// Aggregates `inputs` (which must all have `base`'s fingerprint and fit its tensors) and writes
// the adapter to `out` atomically (refused if it exists unless overwrite). `excluded_before`:
// inputs left out before (admission filters, screening), recorded in the metadata. Throws
// bd::Error.
SoupReport make_soup(const SoupInputs& inputs, const Checkpoint& base, const SoupOptions& options,
                     const std::string& out, bool overwrite,
                     const std::vector<ExcludedInput>& excluded_before = {});

}  // namespace bd
