#include "model/bpe_tokenizer.h"

#include <cstdint>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/tokenizer_json.h"

namespace bd {

using nlohmann::json;
using tokjson::child;

namespace {

const json& member_or_null(const json& config, const char* key) {
  static const json null_value;
  auto it = config.find(key);
  return it == config.end() ? null_value : *it;
}

// A token id as a JSON number: a non-negative integer that int32_t holds (larger ones would wrap
// around to another id; the vocabulary check then decides if the token exists).
bool valid_id(const json& id) {
  return id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() <= INT32_MAX;
}

struct SpecialWrap {
  std::vector<int32_t> prefix, suffix;
};

// TemplateProcessing's "single" template: the special tokens before and after $A.
SpecialWrap template_wrap(const json& config, const std::string& where) {
  const json& single = tokjson::array_field(config, "single", where);
  const json& specials = tokjson::field(config, "special_tokens", where);
  const std::string specials_where = child(where, "special_tokens");
  SpecialWrap wrap;
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string item_where = tokjson::item(child(where, "single"), i);
    const json& piece = single[i];
    if (piece.is_object() && piece.contains("Sequence")) {
      const std::string sequence =
          tokjson::string_field(piece["Sequence"], "id", child(item_where, "Sequence"));
      if (sequence != "A" || seen_sequence)
        fail(item_where, ": a single-sequence template holds $A exactly once");
      seen_sequence = true;
    } else if (piece.is_object() && piece.contains("SpecialToken")) {
      const std::string name =
          tokjson::string_field(piece["SpecialToken"], "id", child(item_where, "SpecialToken"));
      const json& special = tokjson::field(specials, name, specials_where);
      const json& ids = tokjson::array_field(special, "ids", child(specials_where, name));
      for (const json& id : ids) {
        if (!valid_id(id))
          fail(child(child(specials_where, name), "ids"), ": expected non-negative integers");
        (seen_sequence ? wrap.suffix : wrap.prefix).push_back(id.get<int32_t>());
      }
    } else {
      fail(item_where, ": expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
  }
  if (!seen_sequence) fail(child(where, "single"), ": the template has no $A");
  return wrap;
}

// ["<s>", 0] as Roberta/BertProcessing spell cls and sep.
int32_t pair_id(const json& config, const std::string& key, const std::string& where) {
  const json& value = tokjson::field(config, key, where);
  if (!value.is_array() || value.size() != 2 || !valid_id(value[1]))
    fail(child(where, key), ": expected [\"token\", id]");
  return value[1].get<int32_t>();
}

SpecialWrap post_processor_wrap(const json& config, const std::string& where) {
  if (config.is_null()) return {};
  const std::string type = tokjson::type_of(config, where);
  if (type == "ByteLevel") return {};  // only adjusts offsets
  if (type == "TemplateProcessing") return template_wrap(config, where);
  if (type == "RobertaProcessing" || type == "BertProcessing")
    return {{pair_id(config, "cls", where)}, {pair_id(config, "sep", where)}};
  if (type == "Sequence") {
    // Each processor wraps what the ones before it produced.
    SpecialWrap wrap;
    const json& list = tokjson::array_field(config, "processors", where);
    for (size_t i = 0; i < list.size(); ++i) {
      const SpecialWrap inner =
          post_processor_wrap(list[i], tokjson::item(child(where, "processors"), i));
      wrap.prefix.insert(wrap.prefix.begin(), inner.prefix.begin(), inner.prefix.end());
      wrap.suffix.insert(wrap.suffix.end(), inner.suffix.begin(), inner.suffix.end());
    }
    return wrap;
  }
  tokjson::unsupported(child(where, "type"), "the post-processor '" + type +
                                                 "' (supported: TemplateProcessing, ByteLevel, "
                                                 "RobertaProcessing, BertProcessing, Sequence)");
}

}  // namespace

BpeTokenizer::BpeTokenizer(const json& config, const std::string& source)
    : source_(source),
      normalizer_(
          Normalizer::from_json(member_or_null(config, "normalizer"), source + ": normalizer")),
      pre_tokenizer_(PreTokenizer::from_json(member_or_null(config, "pre_tokenizer"),
                                             source + ": pre_tokenizer")),
      model_(
          BpeModel::from_json(tokjson::field(config, "model", source + ": "), source + ": model")),
      added_(AddedTokens::from_json(member_or_null(config, "added_tokens"),
                                    source + ": added_tokens", normalizer_)),
      decoder_(TokenDecoder::from_json(member_or_null(config, "decoder"), source + ": decoder")) {
  const SpecialWrap wrap =
      post_processor_wrap(member_or_null(config, "post_processor"), source + ": post_processor");
  for (const std::vector<int32_t>* ids : {&wrap.prefix, &wrap.suffix})
    for (int32_t id : *ids)
      if (!added_.find(id) && !model_.token_of(id))
        fail(source, ": post_processor: special token id ", id, " is not in the vocabulary");
  special_prefix_ = wrap.prefix;
  special_suffix_ = wrap.suffix;
  find_bos_eos();
}

// tokenizer.json has no BOS/EOS fields: BOS is the one token the template puts before the text,
// EOS the one it puts after; failing that, an added special token with a conventional name.
void BpeTokenizer::find_bos_eos() {
  const auto named = [&](std::initializer_list<const char*> names) {
    for (const char* name : names)
      if (const AddedToken* token = added_.find(std::string_view(name)); token && token->special)
        return token->id;
    return -1;
  };
  bos_id_ = special_prefix_.size() == 1 ? special_prefix_[0]
                                        : named({"<|bos|>", "<s>", "<|begin_of_text|>", "<bos>",
                                                 "<|startoftext|>", "<|endoftext|>"});
  eos_id_ = special_suffix_.size() == 1
                ? special_suffix_[0]
                : named({"<|eos|>", "</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"});
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  if (add_special) ids = special_prefix_;
  for (const TextSegment& raw : added_.split(text, AddedTokens::Pass::kRaw, true)) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    const std::string normalized = normalizer_.apply(raw.text);
    for (const TextSegment& segment :
         added_.split(normalized, AddedTokens::Pass::kNormalized, raw.at_start)) {
      if (segment.id >= 0) {
        ids.push_back(segment.id);
        continue;
      }
      for (const TextPiece& word : pre_tokenizer_.apply({{segment.text, segment.at_start}}))
        model_.encode_word(word.text, ids);
    }
  }
  if (add_special) ids.insert(ids.end(), special_suffix_.begin(), special_suffix_.end());
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const AddedToken* added = added_.find(id))
      tokens.push_back(added->content);
    else if (const std::string* token = model_.token_of(id))
      tokens.push_back(*token);
    else
      fail(source_, ": token id ", id, " is not in the vocabulary (ids 0..", vocab_size() - 1, ")");
  }
  return decoder_.decode(std::move(tokens));
}

int64_t BpeTokenizer::vocab_size() const {
  return int64_t(std::max(model_.max_id(), added_.max_id())) + 1;
}

}  // namespace bd
