// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE", ...}): a vocabulary,
// ranked merges, and the rules for characters the vocabulary lacks (byte_fallback, unk_token).
#pragma once
#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bd {

class BpeModel {
 public:
  // `config` is the "model" object; `where` names it in errors.
  static BpeModel from_json(const nlohmann::json& config, const std::string& where);

  // Appends the ids of one pre-tokenized word: its characters (or their <0xNN> bytes, or unk),
  // merged pair by pair, always the lowest-ranked adjacent pair first (leftmost among equals).
  // Throws bd::Error if a character has no token and there is neither byte_fallback nor unk.
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

  const std::string* token_of(int32_t id) const;  // nullptr if no token has that id
  std::optional<int32_t> id_of(std::string_view token) const;
  int32_t max_id() const { return max_id_; }  // -1 for an empty vocabulary

 private:
  struct Merge {
    uint32_t rank;
    int32_t merged_id;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  }

  std::vector<int32_t> initial_symbols(std::string_view word) const;
  void merge_symbols(std::vector<int32_t>& symbols) const;

  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> vocab_;
  // id → token. A map, not a table indexed by id: ids may be sparse (up to 2^24), and a table
  // would let a 60-byte file allocate hundreds of MB.
  std::unordered_map<int32_t, std::string> tokens_;
  int32_t max_id_ = -1;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) → rank, merged id
  std::array<int32_t, 256> byte_ids_;           // id of "<0xNN>" per byte, -1 if absent
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  bool fuse_unk_ = false;
  int32_t unk_id_ = -1;
  std::string where_;
};

}  // namespace bd
