#include "model/tokenizer_decoder.h"

#include "core/error.h"
#include "model/tokenizer_json.h"
#include "model/tokenizer_unicode.h"

namespace bd {

using nlohmann::json;
using tokjson::child;

namespace {

// "<0xNN>" → the byte NN, or -1.
int fallback_byte(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  const auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int high = hex(token[3]), low = hex(token[4]);
  return high < 0 || low < 0 ? -1 : high * 16 + low;
}

// A token of GPT-2 byte characters back to its bytes; a token with any other character (an added
// token such as "<|endoftext|>" can have one) stays as it is.
std::string byte_level_bytes(const std::string& token) {
  std::string bytes;
  for (size_t pos = 0; pos < token.size();) {
    const unicode::CodePoint c = unicode::decode_utf8(token, pos);
    const int byte = unicode::byte_from_unicode(c.value);
    if (byte < 0) return token;
    bytes += char(byte);
    pos += c.length;
  }
  return bytes;
}

// A field holding one character, as UTF-8.
std::string char_field(const json& config, const std::string& key, const std::string& where) {
  const std::string value = tokjson::string_field(config, key, where);
  if (value.empty() || unicode::decode_utf8(value, 0).length != int(value.size()))
    fail(child(where, key), ": expected exactly one character");
  return value;
}

size_t count_field(const json& config, const std::string& key, const std::string& where) {
  const json& value = tokjson::field(config, key, where);
  if (!value.is_number_unsigned()) fail(child(where, key), ": expected a non-negative integer");
  return value.get<size_t>();
}

// Removes up to `start` leading and `stop` trailing copies of `content` (one character).
std::string strip(const std::string& token, const std::string& content, size_t start, size_t stop) {
  size_t begin = 0, end = token.size();
  for (size_t i = 0; i < start && token.compare(begin, content.size(), content) == 0; ++i)
    begin += content.size();
  for (size_t i = 0; i < stop && end - begin >= content.size() &&
                     token.compare(end - content.size(), content.size(), content) == 0;
       ++i)
    end -= content.size();
  return token.substr(begin, end - begin);
}

bool metaspace_prepends(const json& config, const std::string& where) {
  if (config.contains("prepend_scheme"))
    return tokjson::string_field(config, "prepend_scheme", where) != "never";
  return tokjson::bool_field(config, "add_prefix_space", where, true);
}

}  // namespace

TokenDecoder TokenDecoder::from_json(const json& config, const std::string& where) {
  TokenDecoder decoder;
  if (config.is_null())
    decoder.separator_ = " ";
  else
    add_steps(config, where, decoder.steps_);
  return decoder;
}

void TokenDecoder::add_steps(const json& config, const std::string& where,
                             std::vector<Step>& steps) {
  const std::string type = tokjson::type_of(config, where);
  if (type == "Sequence") {
    const json& list = tokjson::array_field(config, "decoders", where);
    for (size_t i = 0; i < list.size(); ++i)
      add_steps(list[i], tokjson::item(child(where, "decoders"), i), steps);
  } else if (type == "ByteLevel") {
    steps.push_back([](std::vector<std::string>& tokens, size_t) {
      for (std::string& token : tokens) token = byte_level_bytes(token);
    });
  } else if (type == "ByteFallback") {
    steps.push_back([](std::vector<std::string>& tokens, size_t) {
      for (std::string& token : tokens)
        if (int byte = fallback_byte(token); byte >= 0) token = std::string(1, char(byte));
    });
  } else if (type == "Fuse") {
    steps.push_back([](std::vector<std::string>& tokens, size_t) {
      std::string joined;
      for (const std::string& token : tokens) joined += token;
      tokens.assign(1, std::move(joined));
    });
  } else if (type == "Replace") {
    const json& pattern = tokjson::field(config, "pattern", where);
    if (!pattern.is_object() || !pattern.contains("String") || !pattern["String"].is_string() ||
        pattern["String"].get<std::string>().empty())
      tokjson::unsupported(child(where, "pattern"),
                           "a Replace pattern other than a non-empty {\"String\": ...}");
    const std::string from = pattern["String"].get<std::string>();
    const std::string to = tokjson::string_field(config, "content", where);
    steps.push_back([from, to, where](std::vector<std::string>& tokens, size_t max_size) {
      size_t total = 0;
      for (std::string& token : tokens) {
        total += unicode::replaced_size(token, from, to);
        if (total > max_size)
          fail(where, ": the decoded text would be longer than ", kMaxGrowth,
               " times the tokens plus ", kGrowthSlack, " bytes (a Replace that multiplies text)");
        token = unicode::replace_all(token, from, to);
      }
    });
  } else if (type == "Strip") {
    const std::string content = char_field(config, "content", where);
    const size_t start = count_field(config, "start", where),
                 stop = count_field(config, "stop", where);
    steps.push_back([=](std::vector<std::string>& tokens, size_t) {
      for (std::string& token : tokens) token = strip(token, content, start, stop);
    });
  } else if (type == "Metaspace") {
    const std::string replacement = char_field(config, "replacement", where);
    const bool prepends = metaspace_prepends(config, where);
    // The first token loses the one replacement that encoding prepended (HF drops every
    // replacement in that token, which loses leading spaces; see docs/tokenizers.md).
    steps.push_back([replacement, prepends](std::vector<std::string>& tokens, size_t) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        std::string& token = tokens[i];
        if (i == 0 && prepends && token.compare(0, replacement.size(), replacement) == 0)
          token.erase(0, replacement.size());
        token = unicode::replace_all(token, replacement, " ");
      }
    });
  } else {
    tokjson::unsupported(child(where, "type"),
                         "the decoder '" + type +
                             "' (supported: Sequence, ByteLevel, ByteFallback, Fuse, "
                             "Replace, Strip, Metaspace)");
  }
}

std::string TokenDecoder::decode(std::vector<std::string> tokens) const {
  size_t total = 0;
  for (const std::string& token : tokens) total += token.size();
  const size_t max_size = kMaxGrowth * total + kGrowthSlack;
  for (const Step& step : steps_) step(tokens, max_size);
  std::string text;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) text += separator_;
    text += tokens[i];
  }
  return text;
}

}  // namespace bd
