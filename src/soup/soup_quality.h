// The held-out quality of candidate soups, for greedy soups and attribution: each candidate is
// written to a scratch adapter, applied inside the forward (never merged), and scored by its
// mean NLL on held-out text and, when safety suites are given, by the safety gate
// (eval/safety.h: every suite ≥ 0.95 × the base's).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "eval/safety.h"
#include "io/checkpoint.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "soup/soup.h"

namespace bd {

struct SoupScore {
  double nll = 0;    // mean NLL of base + soup on the held-out text
  bool safe = true;  // every safety suite passes the gate (true without suites)
  std::vector<SuiteScore> safety;
};

class SoupEvaluator {
 public:
  // `heldout`: a text file (encoded with the base's tokenizer, windows of `context` tokens);
  // `safety_dir`: a folder of suites, or "" for none. Scores the base once.
  SoupEvaluator(const Checkpoint& base, const std::string& heldout, const std::string& safety_dir,
                int64_t context);
  ~SoupEvaluator();

  double base_nll() const { return base_nll_; }
  int64_t evaluations() const { return evaluations_; }
  // The soup of `paths` by `options` (quiet), scored.
  SoupScore score(const std::vector<std::string>& paths, const SoupOptions& options);

 private:
  const Checkpoint& base_;
  LlamaWeights weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<int32_t> heldout_;
  std::vector<SafetySuite> suites_;
  std::vector<SuiteScore> base_safety_;
  int64_t context_;
  double base_nll_ = 0;
  std::string scratch_dir_;
  int64_t evaluations_ = 0;
};

}  // namespace bd
