// bitdelta soup: many users' adapters of one base aggregated into one (soup/soup.h).
#include <algorithm>
#include <memory>
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
#include "soup/attribution.h"
#include "soup/greedy.h"
#include "soup/screen.h"
#include "soup/soup.h"
#include "soup/soup_group.h"

namespace bd {

namespace {

const CommandSpec kSpec = {
    "soup",
    "--base DIR --deltas FILE... -o FILE --method M [--trim B] [--byzantine F] [--keep M]\n"
    "    [--clip-radius T] [--iterations L] [--output bit|dense] [--granularity matrix|row]\n"
    "    [--require-attestation --trusted-keys FILE] [--max-epsilon E] [--screen]\n"
    "    [--attribution loo|shapley --eval FILE] [--force] [--json]\n"
    "       bitdelta soup --base DIR --deltas FILE... -o FILE --greedy additive|average\n"
    "    [--step S] --eval FILE [--safety DIR] [...]",
    "Aggregates adapters of one base into one adapter, coordinate by coordinate (mean,\n"
    "trimmed-mean, median, sign-majority, sign-vote) or over whole deltas (krum, multi-krum,\n"
    "bulyan, geometric-median, centered-clip), streaming the memory-mapped inputs; or greedily,\n"
    "keeping candidates that improve held-out NLL and pass the safety gates. Admission filters\n"
    "and screening exclude inputs first; attribution gives royalty weights in basis points. The\n"
    "same set of inputs in any order gives a byte-identical file; its metadata lists the method,\n"
    "every input and which were excluded and why. Under `mpirun -np K` the K processes share\n"
    "the tensors and write the same file one process would. See docs/deltasoup.md.",
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
        {"--greedy", "MODE",
         "additive (add --step x delta while held-out NLL improves) or average (Model Soups); "
         "replaces --method"},
        {"--step", "S", "--greedy additive: the coefficient added per step (default 0.25)"},
        {"--eval", "FILE", "held-out text for --greedy and --attribution"},
        {"--eval-context", "N", "window of the held-out evaluation (default min(256, context))"},
        {"--safety", "DIR", "--greedy: safety suites every step must pass (docs/safety.md)"},
        {"--attribution", "KIND", "loo or shapley: royalty weights in basis points"},
        {"--permutations", "K", "--attribution shapley: random orders (default 20)"},
        {"--seed", "S", "--attribution shapley: the orders' seed (default 0)"},
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
  if (args.has("--greedy") && args.has("--method"))
    throw UsageError("give --method M or --greedy MODE, not both");
  if (!args.has("--greedy")) try {
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
  for (const char* option : {"--greedy", "--attribution"})
    if (args.has(option) && !args.has("--eval"))
      throw UsageError(cat(option, " needs --eval FILE (held-out text)"));
  if (args.has("--greedy") && args.get("--greedy") != "additive" &&
      args.get("--greedy") != "average")
    throw UsageError(cat("--greedy must be additive or average, got '", args.get("--greedy"), "'"));
  if (args.has("--attribution") && args.get("--attribution") != "loo" &&
      args.get("--attribution") != "shapley")
    throw UsageError(
        cat("--attribution must be loo or shapley, got '", args.get("--attribution"), "'"));
  if (args.has("--greedy") && args.has("--attribution"))
    throw UsageError("--attribution of a greedy soup is not supported (attribute a rule's soup)");
  const double step = args.get_double("--step", 0.25);
  if (!(step > 0)) throw UsageError(cat("--step must be > 0, got ", step));
  try {
    if (!args.has("--greedy")) check_soup_params(options.params, int64_t(deltas.size()));
  } catch (const Error& error) {
    throw UsageError(error.what());
  }
  if (path_exists(out) && !args.has("--force"))
    fail(out, ": already exists (use --force to overwrite)");
  set_threads(int(args.get_int("--threads", 0)));
  // Under `mpirun -np K`, the K processes build this one soup together (soup/soup_group.h).
  const std::unique_ptr<SoupGroup> group = join_mpi_job();
  const bool lead = !group || group->rank() == 0;
  if (group && group->size() > 1 && (args.has("--greedy") || args.has("--attribution")))
    throw UsageError("--greedy and --attribution run in one process (not under mpirun)");
  options.group = group.get();
  if (!lead) options.quiet = true;

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
  std::vector<std::string> canonical_paths;
  for (const SoupContribution& c : inputs.contributions()) canonical_paths.push_back(c.path);
  nlohmann::json greedy_json = nullptr, attribution_json = nullptr;
  std::unique_ptr<SoupEvaluator> evaluator;
  if (args.has("--greedy") || args.has("--attribution"))
    evaluator = std::make_unique<SoupEvaluator>(
        base, args.get("--eval"), args.get("--safety"),
        args.get_int("--eval-context",
                     std::min<int64_t>(256, base.config().max_position_embeddings)));
  if (args.has("--greedy")) {
    const GreedyMode mode =
        args.get("--greedy") == "additive" ? GreedyMode::additive : GreedyMode::average;
    const GreedyResult greedy = greedy_soup(canonical_paths, *evaluator, mode, step);
    options.fixed_weights = greedy.weights;
    options.label = mode == GreedyMode::additive ? "greedy-additive" : "greedy-average";
    nlohmann::json steps = nlohmann::json::array();
    for (const GreedyStep& s : greedy.steps)
      steps.push_back({{"fingerprint", inputs.contributions()[size_t(s.candidate)].fingerprint},
                       {"owner", inputs.contributions()[size_t(s.candidate)].owner},
                       {"accepted", s.accepted},
                       {"nll", s.nll},
                       {"safe", s.safe},
                       {"weights", s.weights}});
    greedy_json = {{"mode", args.get("--greedy")},      {"step", step},
                   {"base_nll", evaluator->base_nll()}, {"nll", greedy.nll},
                   {"weights", greedy.weights},         {"steps", steps}};
    options.extra_metadata["soup.greedy"] = greedy_json.dump();
  }
  if (args.has("--attribution")) {
    const int64_t permutations = args.get_int("--permutations", 20);
    const int64_t seed = args.get_int("--seed", 0);
    const Attribution attribution = attribute(
        canonical_paths, options, *evaluator,
        args.get("--attribution") == "loo" ? AttributionMethod::loo : AttributionMethod::shapley,
        permutations, uint64_t(seed));
    nlohmann::json contributors = nlohmann::json::array();
    for (size_t k = 0; k < canonical_paths.size(); ++k)
      contributors.push_back({{"fingerprint", inputs.contributions()[k].fingerprint},
                              {"owner", inputs.contributions()[k].owner},
                              {"marginal_nll", attribution.marginal[k]},
                              {"basis_points", attribution.basis_points[k]}});
    attribution_json = {{"method", args.get("--attribution")},
                        {"base_nll", evaluator->base_nll()},
                        {"evaluations", attribution.evaluations},
                        {"contributors", contributors}};
    if (args.get("--attribution") == "shapley") {
      attribution_json["permutations"] = permutations;
      attribution_json["seed"] = seed;
    }
    options.extra_metadata["soup.attribution"] = attribution_json.dump();
  }
  const SoupReport report =
      make_soup(inputs, base, options, out, args.has("--force"), admission.excluded);
  if (!lead) return 0;  // rank 0 reports for the group
  if (!args.has("--json")) {
    std::printf(
        "soup of %lld adapters by %s: %lld coordinates, %zu excluded, version %s\nwrote %s\n",
        (long long)inputs.count(),
        options.fixed_weights.empty() ? soup_method_name(options.params.method)
                                      : options.label.c_str(),
        (long long)report.coordinates, report.excluded.size(), report.version.c_str(), out.c_str());
    for (const ExcludedInput& e : report.excluded)
      std::printf("  excluded %s: %s\n", e.path.c_str(), e.reason.c_str());
    if (!greedy_json.is_null())
      std::printf("greedy %s: held-out nll %.4f (base %.4f), coefficients %s\n",
                  args.get("--greedy").c_str(), greedy_json["nll"].get<double>(),
                  greedy_json["base_nll"].get<double>(), greedy_json["weights"].dump().c_str());
    if (!attribution_json.is_null())
      for (const nlohmann::json& c : attribution_json["contributors"])
        std::printf("  %s %s: %lld bp (marginal %.5f nats)\n",
                    c["fingerprint"].get<std::string>().substr(0, 12).c_str(),
                    c["owner"].get<std::string>().c_str(),
                    (long long)c["basis_points"].get<int64_t>(), c["marginal_nll"].get<double>());
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
              {"method", options.fixed_weights.empty()
                             ? std::string(soup_method_name(options.params.method))
                             : options.label},
              {"version", report.version},
              {"coordinates", report.coordinates},
              {"contributions", contributions},
              {"greedy", greedy_json},
              {"attribution", attribution_json},
              {"seconds", report.seconds}});
  return 0;
}

}  // namespace bd
