// Pre-tokenizers of Hugging Face tokenizer.json files: they cut normalized text into the pieces
// that BPE encodes one at a time (Split, ByteLevel, Metaspace, Sequence).
//
// std::regex has no \p{L}, so the split regexes are hand-written scanners for the patterns real
// byte-level tokenizers use, with the regex's exact leftmost-first, greedy, backtracking result:
//   GPT-2 (also ByteLevel's use_regex):
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama-3 / cl100k (Qwen2: the same with \p{N} for \p{N}{1,3}):
//     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//     \s*[\r\n]+|\s+(?!\S)|\s+
#pragma once
#include <cstddef>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bd {

// A piece of text on its way to the model. `at_start`: the piece begins at offset 0 of the
// input text (Metaspace's prepend_scheme "first" prepends only there).
struct TextPiece {
  std::string text;
  bool at_start = false;
};

enum class SplitRegex { kGpt2, kCl100k, kQwen2 };

// The regex a tokenizer.json pattern spells, if it is one we implement.
std::optional<SplitRegex> recognize_split_regex(std::string_view pattern);

struct ByteRange {
  size_t begin, end;
};
// All non-overlapping matches, left to right, as a regex engine's find-all returns them. Invalid
// UTF-8 bytes count as characters that are neither letters, numbers nor whitespace.
std::vector<ByteRange> find_split_regex_matches(std::string_view text, SplitRegex regex);

class PreTokenizer {
 public:
  // `config` is the "pre_tokenizer" value (null: no pre-tokenization); `where` names it in errors.
  static PreTokenizer from_json(const nlohmann::json& config, const std::string& where);

  std::vector<TextPiece> apply(std::vector<TextPiece> pieces) const;

  // Each step maps one piece to the pieces it becomes (HF's PreTokenizedString::split).
  using Step = std::function<void(TextPiece&& piece, std::vector<TextPiece>& out)>;

 private:
  static void add_steps(const nlohmann::json& config, const std::string& where,
                        std::vector<Step>& steps);
  std::vector<Step> steps_;
};

}  // namespace bd
