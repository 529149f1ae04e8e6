// Normalizers of Hugging Face tokenizer.json files: text rewrites applied before pre-tokenization
// (Sequence, Prepend, Replace with a literal pattern, NFC/NFD/NFKC/NFKD).
#pragma once
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace bd {

class Normalizer {
 public:
  // `config` is the "normalizer" value (null: identity); `where` names it in errors.
  static Normalizer from_json(const nlohmann::json& config, const std::string& where);

  std::string apply(std::string text) const;

 private:
  using Step = std::function<std::string(std::string)>;
  static void add_steps(const nlohmann::json& config, const std::string& where,
                        std::vector<Step>& steps);
  std::vector<Step> steps_;
};

}  // namespace bd
