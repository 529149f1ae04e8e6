#include "model/tokenizer_bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <queue>

#include "core/error.h"
#include "model/tokenizer_json.h"
#include "model/tokenizer_unicode.h"

namespace bd {

using nlohmann::json;
using tokjson::child;

namespace {

constexpr int64_t kMaxTokenId = (1 << 24) - 1;  // far above any real vocabulary; bounds memory

// An optional string field that must be null, absent or "" (prefixes and suffixes we lack).
void require_empty(const json& config, const std::string& key, const std::string& where) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty()))
    return;
  tokjson::unsupported(child(where, key), "a non-empty " + key);
}

// One merges entry: "left right" (the format before tokenizers 0.20) or ["left", "right"].
std::pair<std::string, std::string> merge_parts(const json& entry, const std::string& where) {
  if (entry.is_string()) {
    const std::string text = entry.get<std::string>();
    const size_t space = text.find(' ');
    if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
      fail(where, ": expected \"left right\" with exactly one space, got '", text, "'");
    return {text.substr(0, space), text.substr(space + 1)};
  }
  if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string())
    return {entry[0].get<std::string>(), entry[1].get<std::string>()};
  fail(where, ": expected \"left right\" or [\"left\", \"right\"]");
}

// "U+00E9" for a character, "byte 0xFF" for a byte that is not UTF-8.
std::string describe(std::string_view character) {
  const int32_t cp = unicode::decode_utf8(character, 0).value;
  char text[16];
  if (cp == unicode::kInvalid)
    std::snprintf(text, sizeof text, "byte 0x%02X", unsigned(uint8_t(character[0])));
  else
    std::snprintf(text, sizeof text, "U+%04X", unsigned(cp));
  return text;
}

}  // namespace

BpeModel BpeModel::from_json(const json& config, const std::string& where) {
  BpeModel model;
  model.where_ = where;
  if (config.contains("dropout") && !config["dropout"].is_null() &&
      !(config["dropout"].is_number() && config["dropout"].get<double>() == 0.0))
    tokjson::unsupported(child(where, "dropout"), "BPE dropout (it makes encoding random)");
  require_empty(config, "continuing_subword_prefix", where);
  require_empty(config, "end_of_word_suffix", where);
  model.byte_fallback_ = tokjson::bool_field(config, "byte_fallback", where, false);
  model.ignore_merges_ = tokjson::bool_field(config, "ignore_merges", where, false);
  model.fuse_unk_ = tokjson::bool_field(config, "fuse_unk", where, false);

  const json& vocab = tokjson::field(config, "vocab", where);
  const std::string vocab_where = child(where, "vocab");
  if (!vocab.is_object()) fail(vocab_where, ": expected an object of token → id");
  for (const auto& [token, id_value] : vocab.items()) {
    if (!id_value.is_number_integer() || id_value.get<int64_t>() < 0 ||
        id_value.get<int64_t>() > kMaxTokenId)
      fail(vocab_where, ": the id of '", token, "' must be an integer in 0..", kMaxTokenId);
    const int32_t id = id_value.get<int32_t>();
    const auto [entry, added] = model.tokens_.emplace(id, token);
    if (!added)
      fail(vocab_where, ": id ", id, " is given to both '", entry->second, "' and '", token, "'");
    model.max_id_ = std::max(model.max_id_, id);
    model.vocab_.emplace(token, id);
  }

  const json& merges = tokjson::array_field(config, "merges", where);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string merge_where = tokjson::item(child(where, "merges"), rank);
    const auto [left, right] = merge_parts(merges[rank], merge_where);
    const auto left_id = model.id_of(left), right_id = model.id_of(right),
               merged_id = model.id_of(left + right);
    if (!left_id || !right_id || !merged_id)
      fail(merge_where, ": '",
           !left_id    ? left
           : !right_id ? right
                       : left + right,
           "' is not in the vocabulary");
    // A repeated pair keeps its first (lowest) rank.
    model.merges_.emplace(pair_key(*left_id, *right_id), Merge{uint32_t(rank), *merged_id});
  }

  for (int byte = 0; byte < 256; ++byte) {
    static const char* kHex = "0123456789ABCDEF";
    const std::string name = std::string("<0x") + kHex[byte >> 4] + kHex[byte & 15] + ">";
    model.byte_ids_[byte] = model.id_of(name).value_or(-1);
  }
  if (config.contains("unk_token") && !config["unk_token"].is_null()) {
    const std::string unk = tokjson::string_field(config, "unk_token", where);
    const auto unk_id = model.id_of(unk);
    if (!unk_id) fail(child(where, "unk_token"), ": '", unk, "' is not in the vocabulary");
    model.unk_id_ = *unk_id;
  }
  return model;
}

const std::string* BpeModel::token_of(int32_t id) const {
  auto it = tokens_.find(id);
  return it == tokens_.end() ? nullptr : &it->second;
}

std::optional<int32_t> BpeModel::id_of(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

// One symbol per character; a character outside the vocabulary becomes its <0xNN> byte tokens
// (byte_fallback, if the vocabulary has all of them), else unk (one per run if fuse_unk).
std::vector<int32_t> BpeModel::initial_symbols(std::string_view word) const {
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  bool previous_unk = false;
  for (size_t pos = 0; pos < word.size();) {
    const int length = unicode::decode_utf8(word, pos).length;
    const std::string_view character = word.substr(pos, length);
    pos += length;
    if (auto id = id_of(character)) {
      symbols.push_back(*id);
      previous_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (char byte : character) all_bytes = all_bytes && byte_ids_[uint8_t(byte)] >= 0;
      if (all_bytes) {
        for (char byte : character) symbols.push_back(byte_ids_[uint8_t(byte)]);
        previous_unk = false;
        continue;
      }
    }
    if (unk_id_ < 0)
      fail(where_, ": the text has ", describe(character),
           ", which the vocabulary cannot represent (no byte_fallback tokens and no unk_token)");
    if (!(fuse_unk_ && previous_unk)) symbols.push_back(unk_id_);
    previous_unk = true;
  }
  return symbols;
}

// Merges adjacent symbols, lowest rank first and leftmost among equal ranks, until no adjacent
// pair has a merge. A heap of candidate pairs with lazy deletion: O(n log n) in the word length,
// which matters for tokenizers without pre-tokenization (a whole text is one word).
void BpeModel::merge_symbols(std::vector<int32_t>& symbols) const {
  const int32_t n = int32_t(symbols.size());
  if (n < 2 || merges_.empty()) return;
  std::vector<int32_t> next(n), previous(n);
  std::vector<bool> alive(n, true);
  for (int32_t i = 0; i < n; ++i) next[i] = i + 1 < n ? i + 1 : -1, previous[i] = i - 1;

  struct Candidate {
    uint32_t rank;
    int32_t left, right;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto push_pair = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    auto it = merges_.find(pair_key(symbols[left], symbols[right]));
    if (it != merges_.end()) heap.push({it->second.rank, left, right});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i, i + 1);

  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    // Stale if either side was merged away or changed since the candidate was pushed.
    if (!alive[top.left] || !alive[top.right] || next[top.left] != top.right) continue;
    auto it = merges_.find(pair_key(symbols[top.left], symbols[top.right]));
    if (it == merges_.end() || it->second.rank != top.rank) continue;
    symbols[top.left] = it->second.merged_id;
    alive[top.right] = false;
    next[top.left] = next[top.right];
    if (next[top.left] >= 0) previous[next[top.left]] = top.left;
    push_pair(previous[top.left], top.left);
    push_pair(top.left, next[top.left]);
  }
  int32_t kept = 0;
  for (int32_t i = 0; i < n; ++i)
    if (alive[i]) symbols[kept++] = symbols[i];
  symbols.resize(kept);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (ignore_merges_) {
    if (auto id = id_of(word)) return ids.push_back(*id);
  }
  std::vector<int32_t> symbols = initial_symbols(word);
  merge_symbols(symbols);
  ids.insert(ids.end(), symbols.begin(), symbols.end());
}

}  // namespace bd
