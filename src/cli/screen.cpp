// bitdelta screen: flags contributions that look unlike the others (soup/screen.h).
#include <cstdio>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "core/error.h"
#include "core/threads.h"
#include "soup/screen.h"

namespace bd {

namespace {

const CommandSpec kSpec = {
    "screen",
    "--deltas FILE... [--threshold Z] [--json]",
    "Screens adapters of one base for poisoning and backdoors: for each, the norm of its delta,\n"
    "its cosine similarity to the coordinate-wise median of all of them, and how often its signs\n"
    "agree with the majority, each judged by a robust z-score (median and MAD) against the "
    "others.\n"
    "Prints one line per adapter with the reasons it is flagged. Exit 0 whatever is flagged;\n"
    "`bitdelta soup --screen` excludes the flagged. See docs/deltasoup.md.",
    {
        {"--deltas", "FILE...", "the adapters (.bitdelta), at least 3", /*repeatable=*/true},
        {"--threshold", "Z", "flag beyond this robust z-score (default 3.5)"},
        {"--threads", "N", "threads (default: all cores)"},
        {"--json", "", "print one JSON object"},
    },
    /*max_positional=*/100000,
};

}  // namespace

int run_screen(int argc, char** argv) {
  Args args(kSpec, argc, argv);
  std::vector<std::string> deltas = args.get_all("--deltas");
  for (const std::string& extra : args.positional()) deltas.push_back(extra);
  if (deltas.size() < 3) throw UsageError("--deltas needs at least 3 adapters to compare");
  const double threshold = args.get_double("--threshold", kScreenThreshold);
  if (!(threshold > 0)) throw UsageError(cat("--threshold must be > 0, got ", threshold));
  set_threads(int(args.get_int("--threads", 0)));
  const SoupInputs inputs(deltas);
  const std::vector<ScreenEntry> entries =
      screen_contributions(inputs, threshold, args.has("--json"));
  int64_t flagged = 0;
  nlohmann::json report = nlohmann::json::array();
  for (size_t k = 0; k < entries.size(); ++k) {
    const ScreenEntry& e = entries[k];
    const SoupContribution& c = inputs.contributions()[k];
    flagged += e.flagged();
    report.push_back({{"path", c.path},
                      {"fingerprint", c.fingerprint},
                      {"owner", c.owner},
                      {"norm", e.norm},
                      {"norm_z", e.norm_z},
                      {"cosine", e.cosine},
                      {"cosine_z", e.cosine_z},
                      {"agreement", e.agreement},
                      {"agreement_z", e.agreement_z},
                      {"flagged", e.flagged()},
                      {"reasons", e.reasons}});
    if (!args.has("--json"))
      std::printf(
          "%-8s %s: norm %.4g (z %+.2f), cosine %.3f (z %+.2f), sign agreement %.3f (z "
          "%+.2f)%s%s\n",
          e.flagged() ? "FLAGGED" : "ok", c.path.c_str(), e.norm, e.norm_z, e.cosine, e.cosine_z,
          e.agreement, e.agreement_z, e.flagged() ? ": " : "",
          e.flagged() ? e.reasons.front().c_str() : "");
  }
  if (args.has("--json"))
    print_json({{"threshold", threshold}, {"flagged", flagged}, {"contributions", report}});
  else
    std::printf("%lld of %zu flagged (robust z beyond %g)\n", (long long)flagged, entries.size(),
                threshold);
  return 0;
}

}  // namespace bd
