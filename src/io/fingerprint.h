// Model fingerprints: SHA-256 over the tensors' names, dtypes, shapes and bytes in name order,
// so the same model always has the same fingerprint whatever its sharding or file order.
#pragma once
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace bd {

class Sha256;

// For each tensor sorted by name: name, 0, dtype name ("BF16"), 0, shape as a decimal comma
// list ("4096,11008"; "" for a scalar), 0, byte length in decimal, 0, then the raw bytes.
// Returns 64 lowercase hex characters. Throws bd::Error on duplicate names.
std::string fingerprint_tensors(const std::vector<NamedTensor>& tensors);

// One tensor's part of the fingerprint (the fields above, then its bytes): a caller that streams
// a model's tensors in name order through one Sha256 gets fingerprint_tensors()'s digest.
void fingerprint_update(Sha256& hash, const NamedTensor& tensor);

}  // namespace bd
