// bitdelta soup: many users' adapters of one base aggregated into one (soup/soup.h).
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/threads.h"
#include "io/checkpoint.h"
#include "soup/admission.h"
#include "soup/screen.h"
#include "soup/soup.h"

namespace bd {

namespace {

const CommandSpec kSpec = {
    "soup",
    "--base DIR --deltas FILE... -o FILE --method M [--trim B] [--byzantine F] [--keep M]\n"
    "    [--clip-radius T] [--iterations L] [--output bit|dense] [--granularity matrix|row]\n"
    "    [--require-attestation --trusted-keys FILE] [--max-epsilon E] [--screen] [--force] "
    "[--json]",
    "Aggregates adapters of one base into one adapter, coordinate by coordinate (mean,\n"
    "trimmed-mean, median, sign-majority, sign-vote) or over whole deltas (krum, multi-krum,\n"
    "bulyan, geometric-median, centered-clip), streaming the memory-mapped inputs. The same set\n"
    "of inputs in any order gives a byte-identical file; its metadata lists the method, every\n"
    "input and which were excluded and why. See docs/deltasoup.md.",
    {
        {"--base", "DIR", "the base model folder the adapters were made from"},
        {"--deltas", "FILE...", "the adapters (.bitdelta), one or more after the option",
         /*repeatable=*/true},
        {"-o", "FILE", "the soup adapter to write"},
        {"--method", "M",
         "mean, trimmed-mean, median, krum, multi-krum, bulyan, geometric-median, centered-clip, "
         "sign-majority, sign-vote"},
        {"--trim", "B",
         "trimmed-mean, sign-vote: fraction cut from each end, in [0, 0.5) (default 0.1)"},
        {"--byzantine", "F", "krum, multi-krum, bulyan: contributions assumed Byzantine"},
        {"--keep", "M", "multi-krum: how many of the lowest-scoring contributions are averaged"},
        {"--clip-radius", "T", "centered-clip: clipping radius (default: the median delta norm)"},
        {"--iterations", "L", "geometric-median (default 100) / centered-clip (default 3)"},
        {"--output", "KIND",
         "bit (default): signs of the aggregate and mean |aggregate| scales; dense: the "
         "aggregate exactly, in the base's dtype"},
        {"--granularity", "G", "bit output and sign rules: matrix (default) or row scales"},
        {"--require-attestation", "",
         "admit only adapters whose NAME.attestation.json verifies (needs --trusted-keys)"},
        {"--trusted-keys", "FILE", "attesters trusted by --require-attestation (docs/trust.md)"},
        {"--allowed-measurements", "FILE", "with --require-attestation: allowed measurements"},
        {"--max-epsilon", "E",
         "admit only adapters whose recorded privacy epsilon is at most E (none recorded: "
         "unbounded)"},
        {"--screen", "", "exclude the inputs `bitdelta screen` flags"},
        {"--threads", "N", "threads (default: all cores)"},
        {"--force", "", "overwrite an existing output file"},
        {"--json", "", "print one JSON object"},
    },
    /*max_positional=*/1000,
};

}  // namespace

int run_soup(int argc, char** argv) {
  Args args(kSpec, argc, argv);
  const std::string base_dir = args.require("--base");
  const std::string out = args.require("-o");
  // --deltas takes every following word that is not an option: `--deltas a b c`.
  std::vector<std::string> deltas = args.get_all("--deltas");
  for (const std::string& extra : args.positional()) deltas.push_back(extra);
  if (deltas.empty()) throw UsageError("--deltas needs at least one adapter");
  SoupOptions options;
  try {
    options.params.method = parse_soup_method(args.require("--method"));
  } catch (const Error& error) {
    throw UsageError(error.what());
  }
  options.params.trim = args.get_double("--trim", 0.1);
  options.params.byzantine = args.get_int("--byzantine", 0);
  options.params.keep = args.get_int("--keep", 0);
  options.params.clip_radius = args.get_double("--clip-radius", 0);
  options.params.iterations = args.get_int("--iterations", 0);
  const std::string output = args.get("--output", "bit");
  if (output != "bit" && output != "dense")
    throw UsageError(cat("--output must be bit or dense, got '", output, "'"));
  options.dense = output == "dense";
  const std::string granularity = args.get("--granularity", "matrix");
  if (granularity != "matrix" && granularity != "row")
    throw UsageError(cat("--granularity must be matrix or row, got '", granularity, "'"));
  options.per_row = granularity == "row";
  options.quiet = args.has("--json");
  try {
    check_soup_params(options.params, int64_t(deltas.size()));
  } catch (const Error& error) {
    throw UsageError(error.what());
  }
  if (path_exists(out) && !args.has("--force"))
    fail(out, ": already exists (use --force to overwrite)");
  set_threads(int(args.get_int("--threads", 0)));

  AdmissionOptions admission_options;
  admission_options.require_attestation = args.has("--require-attestation");
  admission_options.trusted_keys = args.get("--trusted-keys");
  admission_options.allowed_measurements = args.get("--allowed-measurements");
  if (args.has("--max-epsilon"))
    admission_options.max_epsilon = args.get_double("--max-epsilon", 0);
  if (admission_options.require_attestation && !args.has("--trusted-keys"))
    throw UsageError("--require-attestation needs --trusted-keys FILE");

  const Checkpoint base(base_dir);
  Admission admission = admit_contributions(deltas, admission_options);
  if (args.has("--screen") && admission.admitted.size() >= 3) {
    const SoupInputs candidates(admission.admitted);
    const std::vector<ScreenEntry> screened = screen_contributions(candidates);
    std::vector<std::string> kept;
    for (size_t k = 0; k < screened.size(); ++k) {
      const SoupContribution& c = candidates.contributions()[k];
      if (screened[k].flagged())
        admission.excluded.push_back(
            {c.path, c.fingerprint, c.owner, "screen: " + screened[k].reasons.front()});
      else
        kept.push_back(c.path);
    }
    admission.admitted = kept;
  }
  if (admission.admitted.empty())
    fail("every input was excluded (", admission.excluded.front().path, ": ",
         admission.excluded.front().reason, ")");
  const SoupInputs inputs(admission.admitted);
  const SoupReport report =
      make_soup(inputs, base, options, out, args.has("--force"), admission.excluded);
  if (!args.has("--json")) {
    std::printf(
        "soup of %lld adapters by %s: %lld coordinates, %zu excluded, version %s\nwrote %s\n",
        (long long)inputs.count(), soup_method_name(options.params.method),
        (long long)report.coordinates, report.excluded.size(), report.version.c_str(), out.c_str());
    for (const ExcludedInput& e : report.excluded)
      std::printf("  excluded %s: %s\n", e.path.c_str(), e.reason.c_str());
    return 0;
  }
  nlohmann::json contributions = nlohmann::json::array();
  for (int64_t k = 0; k < inputs.count(); ++k) {
    const SoupContribution& c = inputs.contributions()[size_t(k)];
    nlohmann::json entry = {{"path", c.path}, {"fingerprint", c.fingerprint}, {"owner", c.owner}};
    if (!report.choice.weights.empty()) entry["weight"] = report.choice.weights[size_t(k)];
    contributions.push_back(entry);
  }
  for (nlohmann::json& entry : contributions)
    for (const ExcludedInput& e : report.excluded)
      if (e.path == entry["path"]) entry["excluded"] = e.reason;
  for (const ExcludedInput& e : admission.excluded)
    contributions.push_back({{"path", e.path},
                             {"fingerprint", e.fingerprint},
                             {"owner", e.owner},
                             {"excluded", e.reason}});
  print_json({{"output", out},
              {"method", soup_method_name(options.params.method)},
              {"version", report.version},
              {"coordinates", report.coordinates},
              {"contributions", contributions},
              {"seconds", report.seconds}});
  return 0;
}

}  // namespace bd
