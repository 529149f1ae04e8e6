// The "added_tokens" of a Hugging Face tokenizer.json (special tokens such as <s>, and others):
// they are cut out of the text before the model sees it, leftmost first and longest among those
// starting at the same place. Tokens with "normalized": false are matched in the raw text, the
// others in the normalized text, as HF does.
#pragma once
#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bd {

class Normalizer;

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;  // only where no word character touches it
  bool lstrip = false;       // also takes the whitespace on its left
  bool rstrip = false;       // ... on its right
  bool normalized = false;   // matched in the normalized text
  bool special = false;
};

// A stretch of text: an added token (id >= 0) or plain text for the model (id == -1).
struct TextSegment {
  std::string text;
  int32_t id = -1;
  bool at_start = false;  // begins at offset 0 of the input
};

class AddedTokens {
 public:
  // `config` is the "added_tokens" array (null or absent: none). Normalized tokens are matched
  // in their normalized form, so the normalizer is needed here.
  static AddedTokens from_json(const nlohmann::json& config, const std::string& where,
                               const Normalizer& normalizer);

  enum class Pass { kRaw, kNormalized };
  // Splits `text` at the tokens matched in `pass`; plain stretches keep `at_start` if they begin
  // the text.
  std::vector<TextSegment> split(std::string_view text, Pass pass, bool at_start) const;

  const AddedToken* find(int32_t id) const;
  const AddedToken* find(std::string_view content) const;
  int32_t max_id() const;

 private:
  struct Pattern {
    std::string text;  // what is matched: the content, or its normalized form
    size_t token;      // index into tokens_
  };
  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  // Per pass, the patterns by their first byte, longest first.
  using PatternTable = std::array<std::vector<Pattern>, 256>;
  PatternTable raw_patterns_, normalized_patterns_;
  bool has_raw_ = false, has_normalized_ = false;
};

}  // namespace bd
