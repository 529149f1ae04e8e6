#include "model/tokenizer_normalizer.h"

#include "core/error.h"
#include "model/tokenizer_json.h"
#include "model/tokenizer_unicode.h"

namespace bd {

using nlohmann::json;
using tokjson::child;

namespace {

// A Replace pattern: only {"String": ...} literals (a regex would need an engine we do not have).
std::string literal_pattern(const json& config, const std::string& where) {
  const json& pattern = tokjson::field(config, "pattern", where);
  const std::string pattern_where = child(where, "pattern");
  if (pattern.is_object() && pattern.contains("Regex"))
    tokjson::unsupported(pattern_where, "a Regex pattern in Replace");
  if (!pattern.is_object() || !pattern.contains("String") || !pattern["String"].is_string())
    fail(pattern_where, ": expected {\"String\": ...}");
  std::string literal = pattern["String"].get<std::string>();
  if (literal.empty()) fail(pattern_where, ": an empty pattern replaces nothing");
  return literal;
}

[[noreturn]] void too_long(const std::string& where) {
  fail(where, ": the normalized text would be longer than ", Normalizer::kMaxGrowth,
       " times the input plus ", Normalizer::kGrowthSlack,
       " bytes (a normalizer that multiplies text is refused)");
}

}  // namespace

Normalizer Normalizer::from_json(const json& config, const std::string& where) {
  Normalizer normalizer;
  if (!config.is_null()) add_steps(config, where, normalizer.steps_);
  return normalizer;
}

void Normalizer::add_steps(const json& config, const std::string& where, std::vector<Step>& steps) {
  const std::string type = tokjson::type_of(config, where);
  if (type == "Sequence") {
    const json& list = tokjson::array_field(config, "normalizers", where);
    for (size_t i = 0; i < list.size(); ++i)
      add_steps(list[i], tokjson::item(child(where, "normalizers"), i), steps);
  } else if (type == "Prepend") {
    const std::string prefix = tokjson::string_field(config, "prepend", where);
    steps.push_back([prefix, where](std::string text, size_t max_size) {
      if (text.empty()) return text;
      if (prefix.size() + text.size() > max_size) too_long(where);
      return prefix + text;
    });
  } else if (type == "Replace") {
    const std::string from = literal_pattern(config, where);
    const std::string to = tokjson::string_field(config, "content", where);
    steps.push_back([from, to, where](std::string text, size_t max_size) {
      if (unicode::replaced_size(text, from, to) > max_size) too_long(where);
      return unicode::replace_all(text, from, to);
    });
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    const unicode::NormalForm form = type == "NFC"    ? unicode::NormalForm::kNfc
                                     : type == "NFD"  ? unicode::NormalForm::kNfd
                                     : type == "NFKC" ? unicode::NormalForm::kNfkc
                                                      : unicode::NormalForm::kNfkd;
    const std::string what = "normalizer " + type;
    // ICU's output is at most a few times its input, so it is checked after the fact.
    steps.push_back([form, what, where](std::string text, size_t max_size) {
      std::string normalized = unicode::normalize(text, form, what);
      if (normalized.size() > max_size) too_long(where);
      return normalized;
    });
  } else {
    tokjson::unsupported(child(where, "type"),
                         "the normalizer '" + type +
                             "' (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD)");
  }
}

std::string Normalizer::apply(std::string text) const {
  const size_t max_size = kMaxGrowth * text.size() + kGrowthSlack;
  for (const Step& step : steps_) text = step(std::move(text), max_size);
  return text;
}

}  // namespace bd
