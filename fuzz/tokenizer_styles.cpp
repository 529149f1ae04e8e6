#include "tokenizer_styles.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "model/tokenizer_unicode.h"

namespace bd::fuzz {

namespace {

using nlohmann::ordered_json;

// Words whose merges the vocabularies hold: frequent English pieces, contractions, digits and a
// few non-ASCII words, so that merges fire on ordinary text and the fuzzer's mutations of it.
const char kWords[] =
    "the of and to in is that it was for on are as with his they at be this from have or by one "
    "had not but what all were when we there can an your which their said if do will each about "
    "how up out them then she many some so these would other into has more her two like him see "
    "time could no make than first been its who now people my made over did down only way find "
    "use may water long little very after words called just where most know get through back "
    "ing er ed es ly tion ment 's 't 're 've 'll 'd 0 1 2 3 12 123 2024 100 "
    "caf\u00e9 na\u00efve \u00fcber se\u00f1or \u65e5\u672c \u043f\u0440\u0438\u0432\u0435\u0442";

std::vector<std::string> words() {
  std::vector<std::string> out;
  std::istringstream in(kWords);
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

// A vocabulary grown word by word: each word's symbols are merged left to right, so the word
// becomes one token and every prefix on the way is a token too.
class VocabBuilder {
 public:
  int32_t add(const std::string& token) {
    if (!vocab_.contains(token)) vocab_[token] = next_id_++;
    return vocab_[token].get<int32_t>();
  }
  void add_word(const std::vector<std::string>& symbols) {
    std::string left = symbols.at(0);
    add(left);
    for (size_t i = 1; i < symbols.size(); ++i) {
      add(symbols[i]);
      if (seen_.insert({left, symbols[i]}).second) merges_.push_back({left, symbols[i]});
      left += symbols[i];
      add(left);
    }
  }
  int32_t next_id() const { return next_id_; }
  const ordered_json& vocab() const { return vocab_; }
  // "a b" strings (tokenizers before 0.20) or ["a", "b"] pairs.
  ordered_json merges(bool as_pairs) const {
    ordered_json out = ordered_json::array();
    for (const auto& [left, right] : merges_)
      out.push_back(as_pairs ? ordered_json::array({left, right})
                             : ordered_json(left + " " + right));
    return out;
  }

 private:
  ordered_json vocab_ = ordered_json::object();
  std::vector<std::pair<std::string, std::string>> merges_;
  std::set<std::pair<std::string, std::string>> seen_;
  int32_t next_id_ = 0;
};

std::vector<std::string> byte_level_symbols(const std::string& word) {
  std::vector<std::string> symbols;
  for (char byte : word) symbols.push_back(unicode::byte_to_unicode(uint8_t(byte)));
  return symbols;
}

std::vector<std::string> utf8_symbols(const std::string& word) {
  std::vector<std::string> symbols;
  for (size_t pos = 0; pos < word.size();) {
    const int length = unicode::decode_utf8(word, pos).length;
    symbols.push_back(word.substr(pos, length));
    pos += length;
  }
  return symbols;
}

// The 256 byte characters first (ids 0..255), then each word with and without a leading space.
VocabBuilder byte_level_vocab() {
  VocabBuilder builder;
  for (int byte = 0; byte < 256; ++byte) builder.add(unicode::byte_to_unicode(uint8_t(byte)));
  for (const std::string& word : words()) {
    builder.add_word(byte_level_symbols(word));
    builder.add_word(byte_level_symbols(" " + word));
  }
  return builder;
}

const char kMetaspace[] = "\u2581";

// The regexes as tokenizer.json spells them (pretokenize.cpp recognises exactly these).
const char kCl100kRegex[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kQwen2Regex[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// <unk> <s> </s>, the 256 <0xNN> byte tokens, then each word with and without a leading ▁.
VocabBuilder sentencepiece_vocab() {
  VocabBuilder builder;
  for (const char* special : {"<unk>", "<s>", "</s>"}) builder.add(special);
  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", byte);
    builder.add(name);
  }
  for (const std::string& word : words()) {
    builder.add_word(utf8_symbols(word));
    builder.add_word(utf8_symbols(kMetaspace + word));
  }
  return builder;
}

ordered_json added_token(int32_t id, const std::string& content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

ordered_json bpe_model(const VocabBuilder& builder, bool merges_as_pairs) {
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"ignore_merges", false},
          {"vocab", builder.vocab()},
          {"merges", builder.merges(merges_as_pairs)}};
}

ordered_json typed(const char* type) {
  return {{"type", type}};
}

ordered_json byte_level(bool add_prefix_space, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", true},
          {"use_regex", use_regex}};
}

ordered_json split_regex(const char* regex) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", regex}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}

// A TemplateProcessing that puts `special` (with `id`) before the single sequence.
ordered_json template_with_prefix(const std::string& special, int32_t id) {
  return {{"type", "TemplateProcessing"},
          {"single",
           {{{"SpecialToken", {{"id", special}, {"type_id", 0}}}},
            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
          {"pair", ordered_json::array()},
          {"special_tokens", {{special, {{"id", special}, {"ids", {id}}, {"tokens", {special}}}}}}};
}

ordered_json tokenizer(ordered_json added, ordered_json normalizer, ordered_json pre_tokenizer,
                       ordered_json post_processor, ordered_json decoder, ordered_json model) {
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", normalizer},
          {"pre_tokenizer", pre_tokenizer},
          {"post_processor", post_processor},
          {"decoder", decoder},
          {"model", model}};
}

// The SentencePiece styles share the model: byte fallback, <unk>, and <unk> <s> </s> as specials.
ordered_json sentencepiece_added() {
  return ordered_json::array(
      {added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>")});
}

ordered_json sentencepiece_model() {
  ordered_json model = bpe_model(sentencepiece_vocab(), false);
  model["unk_token"] = "<unk>";
  model["fuse_unk"] = true;
  model["byte_fallback"] = true;
  return model;
}

}  // namespace

std::string gpt2_style_json() {
  VocabBuilder builder = byte_level_vocab();
  const int32_t end_of_text = builder.next_id();
  return tokenizer(ordered_json::array({added_token(end_of_text, "<|endoftext|>")}), nullptr,
                   byte_level(false, true), byte_level(false, true), typed("ByteLevel"),
                   bpe_model(builder, false))
      .dump();
}

std::string llama3_style_json() {
  VocabBuilder builder = byte_level_vocab();
  const int32_t begin = builder.next_id(), end = begin + 1;
  ordered_json model = bpe_model(builder, true);
  model["ignore_merges"] = true;
  const ordered_json post = {
      {"type", "Sequence"},
      {"processors", ordered_json::array({byte_level(true, false),
                                          template_with_prefix("<|begin_of_text|>", begin)})}};
  const ordered_json pre = {{"type", "Sequence"},
                            {"pretokenizers", ordered_json::array({split_regex(kCl100kRegex),
                                                                   byte_level(false, false)})}};
  return tokenizer(ordered_json::array({added_token(begin, "<|begin_of_text|>"),
                                        added_token(end, "<|end_of_text|>")}),
                   nullptr, pre, post, typed("ByteLevel"), model)
      .dump();
}

std::string qwen2_style_json() {
  VocabBuilder builder = byte_level_vocab();
  const int32_t end_of_text = builder.next_id();
  const ordered_json pre = {
      {"type", "Sequence"},
      {"pretokenizers", ordered_json::array({split_regex(kQwen2Regex), byte_level(false, false)})}};
  return tokenizer(ordered_json::array({added_token(end_of_text, "<|endoftext|>")}), typed("NFC"),
                   pre, byte_level(false, false), typed("ByteLevel"), bpe_model(builder, false))
      .dump();
}

std::string llama2_style_json() {
  const ordered_json normalizer = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", kMetaspace}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMetaspace}}}}};
  const ordered_json decoder = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"}, {"pattern", {{"String", kMetaspace}}}, {"content", " "}},
        typed("ByteFallback"),
        typed("Fuse"),
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  return tokenizer(sentencepiece_added(), normalizer, nullptr, template_with_prefix("<s>", 1),
                   decoder, sentencepiece_model())
      .dump();
}

std::string metaspace_style_json() {
  const ordered_json metaspace = {{"type", "Metaspace"},
                                  {"replacement", kMetaspace},
                                  {"prepend_scheme", "first"},
                                  {"split", true}};
  const ordered_json decoder = {
      {"type", "Sequence"},
      {"decoders", ordered_json::array({metaspace, typed("ByteFallback"), typed("Fuse")})}};
  return tokenizer(sentencepiece_added(), nullptr, metaspace, template_with_prefix("<s>", 1),
                   decoder, sentencepiece_model())
      .dump();
}

std::vector<TokenizerStyle> tokenizer_styles() {
  return {{"gpt2", gpt2_style_json()},
          {"llama3", llama3_style_json()},
          {"qwen2", qwen2_style_json()},
          {"llama2", llama2_style_json()},
          {"metaspace", metaspace_style_json()}};
}

}  // namespace bd::fuzz
