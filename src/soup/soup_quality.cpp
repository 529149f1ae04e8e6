#include "soup/soup_quality.h"

#include <stdlib.h>

#include <filesystem>

#include "core/error.h"
#include "core/mapped_file.h"
#include "eval/perplexity.h"
#include "io/adapter.h"
#include "model/llama_delta.h"

namespace bd {

SoupEvaluator::SoupEvaluator(const Checkpoint& base, const std::string& heldout,
                             const std::string& safety_dir, int64_t context)
    : base_(base),
      weights_(weights_from_checkpoint(base)),
      tokenizer_(load_tokenizer_for_model(base.dir())),
      context_(context) {
  heldout_ = tokenizer_->encode(read_file(heldout), true);
  if (heldout_.size() < 2) fail(heldout, ": the held-out text needs at least 2 tokens");
  if (!safety_dir.empty()) {
    suites_ = load_safety_suites(safety_dir);
    for (const SafetySuite& suite : suites_)
      base_safety_.push_back(score_suite(suite, weights_, nullptr, *tokenizer_));
  }
  base_nll_ = evaluate_nll(weights_, nullptr, heldout_, context_).mean_nll();
  std::string pattern = (std::filesystem::temp_directory_path() / "bitdelta-soup-XXXXXX").string();
  if (!::mkdtemp(pattern.data())) fail("cannot make a scratch folder ", pattern);
  scratch_dir_ = pattern;
}

SoupEvaluator::~SoupEvaluator() {
  std::error_code ignored;
  std::filesystem::remove_all(scratch_dir_, ignored);
}

SoupScore SoupEvaluator::score(const std::vector<std::string>& paths, const SoupOptions& options) {
  SoupOptions quiet = options;
  quiet.quiet = true;
  const std::string candidate = scratch_dir_ + "/candidate.bitdelta";
  make_soup(SoupInputs(paths), base_, quiet, candidate, /*overwrite=*/true);
  const AdapterFile adapter(candidate);
  const LlamaDelta delta = make_llama_delta(weights_, base_, adapter);
  SoupScore out;
  out.nll = evaluate_nll(weights_, &delta, heldout_, context_).mean_nll();
  for (size_t s = 0; s < suites_.size(); ++s) {
    out.safety.push_back(score_suite(suites_[s], weights_, &delta, *tokenizer_));
    out.safe = out.safe && out.safety.back().score >= kSafetyGateRatio * base_safety_[s].score;
  }
  ++evaluations_;
  return out;
}

}  // namespace bd
