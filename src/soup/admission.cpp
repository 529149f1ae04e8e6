#include "soup/admission.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "io/adapter.h"
#include "trust/attestation.h"

namespace bd {

namespace {

// Why the adapter's recorded privacy does not meet the cap, or "" when it does.
std::string privacy_problem(const AdapterFile& file, double max_epsilon) {
  if (file.info().privacy.empty())
    return "no privacy record (not a DP fine-tune): epsilon unbounded";
  const nlohmann::json privacy = nlohmann::json::parse(file.info().privacy);
  if (!privacy.contains("privacy.epsilon")) return "its privacy record has no privacy.epsilon";
  const std::string text = privacy["privacy.epsilon"].get<std::string>();
  char* end = nullptr;
  const double epsilon = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || std::isnan(epsilon))
    return cat("its privacy.epsilon '", text, "' is not a number");
  if (epsilon > max_epsilon) return cat("epsilon ", text, " exceeds --max-epsilon ", max_epsilon);
  return "";
}

}  // namespace

std::string attestation_path_for(const std::string& adapter_path) {
  const std::string suffix = ".bitdelta";
  const bool has_suffix =
      adapter_path.size() > suffix.size() &&
      adapter_path.compare(adapter_path.size() - suffix.size(), suffix.size(), suffix) == 0;
  return (has_suffix ? adapter_path.substr(0, adapter_path.size() - suffix.size()) : adapter_path) +
         ".attestation.json";
}

Admission admit_contributions(const std::vector<std::string>& paths,
                              const AdmissionOptions& options) {
  TrustedKeys trusted;
  std::vector<std::string> measurements;
  if (options.require_attestation) {
    if (options.trusted_keys.empty()) fail("--require-attestation needs --trusted-keys FILE");
    trusted = read_trusted_keys(options.trusted_keys);
    if (!options.allowed_measurements.empty())
      measurements = read_measurements(options.allowed_measurements);
  }
  Admission admission;
  for (const std::string& path : paths) {
    const AdapterFile file(path);
    std::string reason;
    if (options.require_attestation) {
      const std::string attestation = attestation_path_for(path);
      if (!path_exists(attestation)) {
        reason = cat("no attestation at ", attestation);
      } else {
        try {
          verify_attestation(parse_attestation(read_file(attestation)), path, trusted,
                             options.allowed_measurements.empty() ? nullptr : &measurements);
        } catch (const Error& error) {
          reason = cat("attestation does not verify: ", error.what());
        }
      }
    }
    if (reason.empty() && options.max_epsilon) reason = privacy_problem(file, *options.max_epsilon);
    if (reason.empty())
      admission.admitted.push_back(path);
    else
      admission.excluded.push_back({path, adapter_fingerprint(path), file.info().owner, reason});
  }
  return admission;
}

}  // namespace bd
