#include "model/tokenizer_added_tokens.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/tokenizer_json.h"
#include "model/tokenizer_normalizer.h"
#include "model/tokenizer_unicode.h"

namespace bd {

using nlohmann::json;
using tokjson::child;

namespace {

// The character that ends at byte `end` (which must be > 0).
int32_t char_before(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && (uint8_t(text[start]) & 0xC0) == 0x80) --start;
  const unicode::CodePoint c = unicode::decode_utf8(text, start);
  return start + c.length == end ? c.value : unicode::kInvalid;
}

size_t whitespace_start_before(std::string_view text, size_t end) {
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && end - start < 4 && (uint8_t(text[start]) & 0xC0) == 0x80) --start;
    const unicode::CodePoint c = unicode::decode_utf8(text, start);
    if (start + c.length != end || !unicode::is_whitespace(c.value)) break;
    end = start;
  }
  return end;
}

size_t whitespace_end_after(std::string_view text, size_t pos) {
  while (pos < text.size()) {
    const unicode::CodePoint c = unicode::decode_utf8(text, pos);
    if (!unicode::is_whitespace(c.value)) break;
    pos += c.length;
  }
  return pos;
}

AddedToken parse_token(const json& entry, const std::string& where) {
  AddedToken token;
  const json& id = tokjson::field(entry, "id", where);
  if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (int64_t(1) << 24))
    fail(child(where, "id"), ": expected a non-negative integer below 2^24");
  token.id = id.get<int32_t>();
  token.content = tokjson::string_field(entry, "content", where);
  if (token.content.empty()) fail(child(where, "content"), ": an added token cannot be empty");
  token.special = tokjson::bool_field(entry, "special", where, false);
  token.single_word = tokjson::bool_field(entry, "single_word", where, false);
  token.lstrip = tokjson::bool_field(entry, "lstrip", where, false);
  token.rstrip = tokjson::bool_field(entry, "rstrip", where, false);
  token.normalized = tokjson::bool_field(entry, "normalized", where, !token.special);
  return token;
}

}  // namespace

AddedTokens AddedTokens::from_json(const json& config, const std::string& where,
                                   const Normalizer& normalizer) {
  AddedTokens added;
  if (config.is_null()) return added;
  if (!config.is_array()) fail(where, ": expected an array");
  for (size_t i = 0; i < config.size(); ++i) {
    const std::string item_where = tokjson::item(where, i);
    AddedToken token = parse_token(config[i], item_where);
    if (added.find(token.id))
      fail(child(item_where, "id"), ": id ", token.id, " is used by another added token");
    if (added.find(token.content))
      fail(child(item_where, "content"), ": '", token.content, "' is added twice");
    added.by_id_.emplace(token.id, added.tokens_.size());
    std::string pattern = token.normalized ? normalizer.apply(token.content) : token.content;
    if (!pattern.empty()) {
      PatternTable& table = token.normalized ? added.normalized_patterns_ : added.raw_patterns_;
      (token.normalized ? added.has_normalized_ : added.has_raw_) = true;
      table[uint8_t(pattern[0])].push_back({std::move(pattern), added.tokens_.size()});
    }
    added.tokens_.push_back(std::move(token));
  }
  for (PatternTable* table : {&added.raw_patterns_, &added.normalized_patterns_})
    for (std::vector<Pattern>& patterns : *table)
      std::stable_sort(patterns.begin(), patterns.end(), [](const Pattern& a, const Pattern& b) {
        return a.text.size() > b.text.size();
      });
  return added;
}

const AddedToken* AddedTokens::find(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedTokens::find(std::string_view content) const {
  for (const AddedToken& token : tokens_)
    if (token.content == content) return &token;
  return nullptr;
}

int32_t AddedTokens::max_id() const {
  int32_t max_id = -1;
  for (const AddedToken& token : tokens_) max_id = std::max(max_id, token.id);
  return max_id;
}

std::vector<TextSegment> AddedTokens::split(std::string_view text, Pass pass, bool at_start) const {
  const PatternTable& table = pass == Pass::kRaw ? raw_patterns_ : normalized_patterns_;
  const bool any = pass == Pass::kRaw ? has_raw_ : has_normalized_;
  std::vector<TextSegment> segments;
  const auto plain = [&](size_t begin, size_t end) {
    if (end > begin)
      segments.push_back(
          {std::string(text.substr(begin, end - begin)), -1, at_start && begin == 0});
  };
  size_t plain_start = 0, pos = 0;
  while (pos < text.size() && any) {
    // Leftmost match; the longest one there (patterns are sorted longest first).
    const Pattern* match = nullptr;
    size_t start = pos;
    for (; start < text.size() && !match; ++start)
      for (const Pattern& pattern : table[uint8_t(text[start])])
        if (text.compare(start, pattern.text.size(), pattern.text) == 0) {
          match = &pattern;
          break;
        }
    if (!match) break;
    --start;
    size_t stop = start + match->text.size();
    const AddedToken& token = tokens_[match->token];
    pos = stop;
    if (token.single_word &&
        ((start > 0 && unicode::is_word_char(char_before(text, start))) ||
         (stop < text.size() && unicode::is_word_char(unicode::decode_utf8(text, stop).value))))
      continue;
    if (token.lstrip) start = std::max(whitespace_start_before(text, start), plain_start);
    if (token.rstrip) stop = whitespace_end_after(text, stop);
    plain(plain_start, start);
    segments.push_back({std::string(text.substr(start, stop - start)), token.id, false});
    plain_start = pos = stop;
  }
  plain(plain_start, text.size());
  return segments;
}

}  // namespace bd
