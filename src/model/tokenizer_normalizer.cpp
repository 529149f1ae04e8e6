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
    steps.push_back([prefix](std::string text) { return text.empty() ? text : prefix + text; });
  } else if (type == "Replace") {
    const std::string from = literal_pattern(config, where);
    const std::string to = tokjson::string_field(config, "content", where);
    steps.push_back([from, to](std::string text) { return unicode::replace_all(text, from, to); });
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    const unicode::NormalForm form = type == "NFC"    ? unicode::NormalForm::kNfc
                                     : type == "NFD"  ? unicode::NormalForm::kNfd
                                     : type == "NFKC" ? unicode::NormalForm::kNfkc
                                                      : unicode::NormalForm::kNfkd;
    const std::string what = "normalizer " + type;
    steps.push_back(
        [form, what](std::string text) { return unicode::normalize(text, form, what); });
  } else {
    tokjson::unsupported(child(where, "type"),
                         "the normalizer '" + type +
                             "' (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD)");
  }
}

std::string Normalizer::apply(std::string text) const {
  for (const Step& step : steps_) text = step(std::move(text));
  return text;
}

}  // namespace bd
