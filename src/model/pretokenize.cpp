#include "model/pretokenize.h"

#include <algorithm>

#include "core/error.h"
#include "model/tokenizer_json.h"
#include "model/tokenizer_unicode.h"

namespace bd {

using nlohmann::json;
using unicode::decode_utf8;

namespace {

// ---- the split regexes, as scanners -------------------------------------------------------

bool is_other(int32_t cp) {  // [^\s\p{L}\p{N}]
  return !unicode::is_whitespace(cp) && !unicode::is_letter(cp) && !unicode::is_number(cp);
}
bool is_newline(int32_t cp) {
  return cp == '\r' || cp == '\n';
}

// End of the run of characters from `pos` that satisfy `pred`, at most `max_count` (0: any).
template <typename Pred>
size_t run_end(std::string_view text, size_t pos, Pred pred, size_t max_count = 0) {
  size_t count = 0;
  while (pos < text.size() && (max_count == 0 || count < max_count)) {
    const unicode::CodePoint c = decode_utf8(text, pos);
    if (!pred(c.value)) break;
    pos += c.length;
    ++count;
  }
  return pos;
}

// 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive (simple case folding, so 'ſ' is an 's').
// Returns the match's end, or 0 if there is none.
size_t contraction_end(std::string_view text, size_t pos, bool ignore_case) {
  if (text[pos] != '\'') return 0;
  const auto letter = [&](size_t p) -> int32_t {
    if (p >= text.size()) return 0;
    const unicode::CodePoint c = decode_utf8(text, p);
    if (!ignore_case) return c.value;
    if (c.value == 0x17F) return 's';
    return c.value < 0x80 && c.value >= 'A' && c.value <= 'Z' ? c.value + 32 : c.value;
  };
  const auto length = [&](size_t p) { return decode_utf8(text, p).length; };
  const size_t p1 = pos + 1;
  const int32_t first = letter(p1);
  if (first == 's' || first == 't' || first == 'm' || first == 'd') return p1 + length(p1);
  if (first != 'r' && first != 'v' && first != 'l') return 0;
  const size_t p2 = p1 + length(p1);
  const int32_t second = letter(p2);
  const bool match = (first == 'l' && second == 'l') || (first != 'l' && second == 'e');
  return match ? p2 + length(p2) : 0;
}

// `\s+(?!\S)|\s+` at a whitespace character: the whole whitespace run, except that a run of two or
// more that a non-space follows leaves its last character to start the next match (" world").
size_t trailing_whitespace_end(std::string_view text, size_t pos) {
  size_t end = pos, last_start = pos, count = 0;
  while (end < text.size()) {
    const unicode::CodePoint c = decode_utf8(text, end);
    if (!unicode::is_whitespace(c.value)) break;
    last_start = end;
    end += c.length;
    ++count;
  }
  return (end == text.size() || count == 1) ? end : last_start;
}

size_t gpt2_match_end(std::string_view text, size_t pos) {
  if (size_t end = contraction_end(text, pos, false)) return end;
  // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: the three classes are disjoint, so the character after
  // the optional space picks the alternative.
  const size_t start = (text[pos] == ' ' && pos + 1 < text.size()) ? pos + 1 : pos;
  const int32_t c = decode_utf8(text, start).value;
  if (unicode::is_letter(c)) return run_end(text, start, unicode::is_letter);
  if (unicode::is_number(c)) return run_end(text, start, unicode::is_number);
  if (is_other(c)) return run_end(text, start, is_other);
  return trailing_whitespace_end(text, pos);
}

size_t cl100k_match_end(std::string_view text, size_t pos, size_t max_digits) {
  if (size_t end = contraction_end(text, pos, true)) return end;
  const unicode::CodePoint c = decode_utf8(text, pos);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  const size_t after = pos + c.length;
  if (!is_newline(c.value) && !unicode::is_letter(c.value) && !unicode::is_number(c.value)) {
    const size_t end = run_end(text, after, unicode::is_letter);
    if (end > after) return end;
  }
  if (unicode::is_letter(c.value)) return run_end(text, pos, unicode::is_letter);
  // \p{N}{1,3}
  if (unicode::is_number(c.value)) return run_end(text, pos, unicode::is_number, max_digits);
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  const size_t start = (c.value == ' ' && after < text.size()) ? after : pos;
  if (is_other(decode_utf8(text, start).value))
    return run_end(text, run_end(text, start, is_other), is_newline);
  // `\s*[\r\n]+`: backtracking leaves the match just after the run's last newline.
  size_t end = pos, after_last_newline = 0;
  while (end < text.size()) {
    const unicode::CodePoint w = decode_utf8(text, end);
    if (!unicode::is_whitespace(w.value)) break;
    end += w.length;
    if (is_newline(w.value)) after_last_newline = end;
  }
  if (after_last_newline) return after_last_newline;
  return trailing_whitespace_end(text, pos);
}

// ---- Split and its delimiter behaviours ---------------------------------------------------

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

SplitBehavior parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  fail(where, ": unknown split behavior '", name,
       "' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

struct Segment {
  size_t begin, end;
  bool is_match;
};

// The matches and the gaps between them, covering [0, size).
std::vector<Segment> segments_of(size_t size, const std::vector<ByteRange>& matches, bool invert) {
  std::vector<Segment> segments;
  size_t previous = 0;
  for (const ByteRange& m : matches) {
    if (m.begin > previous) segments.push_back({previous, m.begin, invert});
    segments.push_back({m.begin, m.end, !invert});
    previous = m.end;
  }
  if (previous < size) segments.push_back({previous, size, invert});
  return segments;
}

// Where the pieces go, per HF's SplitDelimiterBehavior: a delimiter joins its neighbour only if
// that neighbour is not itself a delimiter.
std::vector<ByteRange> pieces_of(const std::vector<Segment>& segments, SplitBehavior behavior) {
  std::vector<ByteRange> pieces;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments)
        if (!s.is_match) pieces.push_back({s.begin, s.end});
      break;
    case SplitBehavior::kIsolated:
      for (const Segment& s : segments) pieces.push_back({s.begin, s.end});
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !pieces.empty())
          pieces.back().end = s.end;
        else
          pieces.push_back({s.begin, s.end});
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto s = segments.rbegin(); s != segments.rend(); ++s) {
        if (s->is_match && !previous_match && !pieces.empty())
          pieces.back().begin = s->begin;
        else
          pieces.push_back({s->begin, s->end});
        previous_match = s->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    case SplitBehavior::kContiguous:
      for (size_t i = 0; i < segments.size(); ++i) {
        if (i > 0 && segments[i].is_match == previous_match)
          pieces.back().end = segments[i].end;
        else
          pieces.push_back({segments[i].begin, segments[i].end});
        previous_match = segments[i].is_match;
      }
      break;
  }
  return pieces;
}

void emit_pieces(const TextPiece& piece, const std::vector<ByteRange>& ranges,
                 std::vector<TextPiece>& out) {
  for (const ByteRange& r : ranges)
    if (r.end > r.begin)
      out.push_back({piece.text.substr(r.begin, r.end - r.begin), piece.at_start && r.begin == 0});
}

std::vector<ByteRange> find_literal(std::string_view text, std::string_view literal) {
  std::vector<ByteRange> matches;
  for (size_t pos = text.find(literal); pos != std::string_view::npos;
       pos = text.find(literal, pos + literal.size()))
    matches.push_back({pos, pos + literal.size()});
  return matches;
}

std::string byte_level_chars(std::string_view text) {
  std::string mapped;
  mapped.reserve(text.size() * 2);
  for (char byte : text) mapped += unicode::byte_to_unicode(uint8_t(byte));
  return mapped;
}

}  // namespace

std::optional<SplitRegex> recognize_split_regex(std::string_view pattern) {
  static const std::string_view gpt2 =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  static const std::string_view cl100k =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  static const std::string_view qwen2 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  if (pattern == gpt2) return SplitRegex::kGpt2;
  if (pattern == cl100k) return SplitRegex::kCl100k;
  if (pattern == qwen2) return SplitRegex::kQwen2;
  return std::nullopt;
}

std::vector<ByteRange> find_split_regex_matches(std::string_view text, SplitRegex regex) {
  std::vector<ByteRange> matches;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = 0;
    switch (regex) {
      case SplitRegex::kGpt2:
        end = gpt2_match_end(text, pos);
        break;
      case SplitRegex::kCl100k:
        end = cl100k_match_end(text, pos, 3);
        break;
      case SplitRegex::kQwen2:
        end = cl100k_match_end(text, pos, 1);
        break;
    }
    matches.push_back({pos, end});
    pos = end;
  }
  return matches;
}

// ---- tokenizer.json ------------------------------------------------------------------------

namespace {

using tokjson::child;

PreTokenizer::Step split_step(const json& config, const std::string& where) {
  const json& pattern = tokjson::field(config, "pattern", where);
  const SplitBehavior behavior =
      parse_behavior(tokjson::string_field(config, "behavior", where), child(where, "behavior"));
  const bool invert = tokjson::bool_field(config, "invert", where, false);
  const std::string pattern_where = child(where, "pattern");
  if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
    const std::string literal = pattern["String"].get<std::string>();
    if (literal.empty()) fail(pattern_where, ": an empty String pattern splits nothing");
    return [=](TextPiece&& piece, std::vector<TextPiece>& out) {
      emit_pieces(
          piece,
          pieces_of(segments_of(piece.text.size(), find_literal(piece.text, literal), invert),
                    behavior),
          out);
    };
  }
  if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
    const std::string text = pattern["Regex"].get<std::string>();
    const std::optional<SplitRegex> regex = recognize_split_regex(text);
    if (!regex)
      tokjson::unsupported(
          pattern_where,
          "the regex '" + text +
              "' (bitdelta implements the GPT-2, Llama-3/cl100k and Qwen2 split patterns)");
    return [=](TextPiece&& piece, std::vector<TextPiece>& out) {
      const auto matches = find_split_regex_matches(piece.text, *regex);
      emit_pieces(piece, pieces_of(segments_of(piece.text.size(), matches, invert), behavior), out);
    };
  }
  fail(pattern_where, ": expected {\"String\": ...} or {\"Regex\": ...}");
}

PreTokenizer::Step byte_level_step(const json& config, const std::string& where) {
  const bool add_prefix_space = tokjson::bool_field(config, "add_prefix_space", where, true);
  const bool use_regex = tokjson::bool_field(config, "use_regex", where, true);
  return [=](TextPiece&& piece, std::vector<TextPiece>& out) {
    if (add_prefix_space && piece.text[0] != ' ') piece.text.insert(0, " ");
    std::vector<TextPiece> pieces;
    if (use_regex)
      emit_pieces(
          piece,
          pieces_of(segments_of(piece.text.size(),
                                find_split_regex_matches(piece.text, SplitRegex::kGpt2), false),
                    SplitBehavior::kIsolated),
          pieces);
    else
      pieces.push_back(std::move(piece));
    for (TextPiece& p : pieces) out.push_back({byte_level_chars(p.text), p.at_start});
  };
}

enum class PrependScheme { kAlways, kFirst, kNever };

PreTokenizer::Step metaspace_step(const json& config, const std::string& where) {
  const std::string replacement = tokjson::string_field(config, "replacement", where);
  // One character, as the message says; a long one would multiply the text at every space.
  if (replacement.empty() || unicode::decode_utf8(replacement, 0).length != int(replacement.size()))
    fail(child(where, "replacement"), ": must be one character");
  PrependScheme scheme = PrependScheme::kAlways;
  if (config.contains("prepend_scheme")) {
    const std::string name = tokjson::string_field(config, "prepend_scheme", where);
    if (name == "always")
      scheme = PrependScheme::kAlways;
    else if (name == "first")
      scheme = PrependScheme::kFirst;
    else if (name == "never")
      scheme = PrependScheme::kNever;
    else
      fail(child(where, "prepend_scheme"), ": unknown value '", name,
           "' (expected always, first or never)");
  }
  // Files older than prepend_scheme say add_prefix_space instead.
  if (!tokjson::bool_field(config, "add_prefix_space", where, true)) {
    if (config.contains("prepend_scheme") && scheme != PrependScheme::kNever)
      fail(child(where, "add_prefix_space"), ": false contradicts prepend_scheme");
    scheme = PrependScheme::kNever;
  }
  const bool split = tokjson::bool_field(config, "split", where, true);
  return [=](TextPiece&& piece, std::vector<TextPiece>& out) {
    piece.text = unicode::replace_all(piece.text, " ", replacement);
    const bool prepend =
        scheme == PrependScheme::kAlways || (scheme == PrependScheme::kFirst && piece.at_start);
    if (prepend && piece.text.compare(0, replacement.size(), replacement) != 0)
      piece.text.insert(0, replacement);
    if (!split) return out.push_back(std::move(piece));
    const auto matches = find_literal(piece.text, replacement);
    emit_pieces(
        piece,
        pieces_of(segments_of(piece.text.size(), matches, false), SplitBehavior::kMergedWithNext),
        out);
  };
}

}  // namespace

PreTokenizer PreTokenizer::from_json(const json& config, const std::string& where) {
  PreTokenizer pre_tokenizer;
  if (!config.is_null()) add_steps(config, where, pre_tokenizer.steps_);
  return pre_tokenizer;
}

void PreTokenizer::add_steps(const json& config, const std::string& where,
                             std::vector<Step>& steps) {
  const std::string type = tokjson::type_of(config, where);
  if (type == "Sequence") {
    const json& list = tokjson::array_field(config, "pretokenizers", where);
    for (size_t i = 0; i < list.size(); ++i)
      add_steps(list[i], tokjson::item(child(where, "pretokenizers"), i), steps);
  } else if (type == "Split") {
    steps.push_back(split_step(config, where));
  } else if (type == "ByteLevel") {
    steps.push_back(byte_level_step(config, where));
  } else if (type == "Metaspace") {
    steps.push_back(metaspace_step(config, where));
  } else {
    tokjson::unsupported(
        child(where, "type"),
        "the pre-tokenizer '" + type + "' (supported: Sequence, Split, ByteLevel, Metaspace)");
  }
}

std::vector<TextPiece> PreTokenizer::apply(std::vector<TextPiece> pieces) const {
  std::erase_if(pieces, [](const TextPiece& p) { return p.text.empty(); });
  for (const Step& step : steps_) {
    std::vector<TextPiece> next;
    next.reserve(pieces.size());
    for (TextPiece& piece : pieces) step(std::move(piece), next);
    pieces = std::move(next);
  }
  return pieces;
}

}  // namespace bd
