// Decoders of Hugging Face tokenizer.json files: they turn the token strings of an id sequence back
// into text (Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace).
//
// Unlike HF, which replaces bytes that do not form UTF-8 with U+FFFD, decoding here returns the
// exact bytes, so a byte-level or byte-fallback tokenizer round-trips any byte string.
#pragma once
#include <cstddef>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace bd {

class TokenDecoder {
 public:
  // `config` is the "decoder" value; null means HF's default, which joins tokens with spaces.
  static TokenDecoder from_json(const nlohmann::json& config, const std::string& where);

  // Throws bd::Error rather than produce text longer than kMaxGrowth times the tokens' total
  // length plus kGrowthSlack bytes (only Replace can lengthen text; real decoders shorten it).
  std::string decode(std::vector<std::string> tokens) const;

  static constexpr size_t kMaxGrowth = 64, kGrowthSlack = 1024;

 private:
  // Each step rewrites the tokens; one that lengthens them keeps their total within `max_size`.
  using Step = std::function<void(std::vector<std::string>& tokens, size_t max_size)>;
  static void add_steps(const nlohmann::json& config, const std::string& where,
                        std::vector<Step>& steps);
  std::vector<Step> steps_;
  std::string separator_;  // between the final token strings
};

}  // namespace bd
