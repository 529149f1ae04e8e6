// Normalizers of Hugging Face tokenizer.json files: text rewrites applied before pre-tokenization
// (Sequence, Prepend, Replace with a literal pattern, NFC/NFD/NFKC/NFKD).
#pragma once
#include <cstddef>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace bd {

class Normalizer {
 public:
  // `config` is the "normalizer" value (null: identity); `where` names it in errors.
  static Normalizer from_json(const nlohmann::json& config, const std::string& where);

  // Throws bd::Error rather than make the text longer than kMaxGrowth times its size plus
  // kGrowthSlack bytes.
  std::string apply(std::string text) const;

  // Real normalizers add a short prefix, turn a space into "▁" (3 bytes) or expand compatibility
  // characters (NFKC: at most 18 code points from one). A file that multiplies text (a chain of
  // Replace steps that each double it: 1 KB of JSON asking for gigabytes) is refused instead.
  static constexpr size_t kMaxGrowth = 64, kGrowthSlack = 1024;

 private:
  // Each step returns the rewritten text, or throws if it would be longer than `max_size`.
  using Step = std::function<std::string(std::string text, size_t max_size)>;
  static void add_steps(const nlohmann::json& config, const std::string& where,
                        std::vector<Step>& steps);
  std::vector<Step> steps_;
};

}  // namespace bd
