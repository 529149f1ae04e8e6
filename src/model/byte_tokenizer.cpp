#include "model/byte_tokenizer.h"

#include <nlohmann/json.hpp>

namespace bd {

namespace {

nlohmann::ordered_json special_token(int32_t id, const char* content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

nlohmann::ordered_json special_in_template(const char* content) {
  return {{"SpecialToken", {{"id", content}, {"type_id", 0}}}};
}

nlohmann::ordered_json sequence_in_template(const char* name) {
  return {{"Sequence", {{"id", name}, {"type_id", 0}}}};
}

}  // namespace

std::string byte_tokenizer_json() {
  using nlohmann::ordered_json;
  ordered_json vocab = ordered_json::object();
  for (int byte = 0; byte < 256; ++byte) {
    static const char* kHex = "0123456789ABCDEF";
    vocab[std::string("<0x") + kHex[byte >> 4] + kHex[byte & 15] + ">"] = byte;
  }
  vocab["<|bos|>"] = kByteBosId;
  vocab["<|eos|>"] = kByteEosId;

  ordered_json config;
  config["version"] = "1.0";
  config["truncation"] = nullptr;
  config["padding"] = nullptr;
  config["added_tokens"] = {special_token(kByteBosId, "<|bos|>"),
                            special_token(kByteEosId, "<|eos|>")};
  config["normalizer"] = nullptr;
  config["pre_tokenizer"] = nullptr;
  config["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {special_in_template("<|bos|>"), sequence_in_template("A")}},
      {"pair",
       {special_in_template("<|bos|>"), sequence_in_template("A"), special_in_template("<|bos|>"),
        sequence_in_template("B")}},
      {"special_tokens",
       {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {kByteBosId}}, {"tokens", {"<|bos|>"}}}}}}};
  config["decoder"] = {{"type", "Sequence"},
                       {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}};
  config["model"] = {{"type", "BPE"},
                     {"dropout", nullptr},
                     {"unk_token", nullptr},
                     {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr},
                     {"fuse_unk", false},
                     {"byte_fallback", true},
                     {"ignore_merges", false},
                     {"vocab", vocab},
                     {"merges", ordered_json::array()}};
  return config.dump(2) + "\n";
}

std::unique_ptr<Tokenizer> make_byte_tokenizer() {
  return parse_tokenizer_json(byte_tokenizer_json(), "the byte tokenizer");
}

}  // namespace bd
