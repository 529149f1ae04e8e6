// DeltaSoup's admission filters: which contributions may enter a soup at all, checked before any
// aggregation. A contribution that fails a filter is excluded with its reason (recorded in the
// soup's metadata), never silently dropped; a file that is not an adapter is an error.
//   - attestation: NAME.attestation.json next to NAME.bitdelta must verify against the trusted
//     keys (and allowed measurements, when given): trust/attestation.h;
//   - privacy: the adapter's recorded ε (privacy.epsilon) must be at most max_epsilon; no record
//     (not a DP fine-tune) counts as ε = ∞. Only an attested adapter's record is bound by a
//     signature: use both filters for a verified bound.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace bd {

struct AdmissionOptions {
  bool require_attestation = false;
  std::string trusted_keys;          // file of trusted attester keys (required with attestation)
  std::string allowed_measurements;  // optional file of allowed measurements
  std::optional<double> max_epsilon;
};

struct ExcludedInput {
  std::string path, fingerprint, owner, reason;
};

struct Admission {
  std::vector<std::string> admitted;  // in the order given
  std::vector<ExcludedInput> excluded;
};

// "dir/NAME.attestation.json" for "dir/NAME.bitdelta" (any other name: the name +
// ".attestation.json").
std::string attestation_path_for(const std::string& adapter_path);

// Throws bd::Error for a path that is not a readable adapter or an unreadable key file.
Admission admit_contributions(const std::vector<std::string>& paths,
                              const AdmissionOptions& options);

}  // namespace bd
