// Tokenizers: text <-> token ids, described by a Hugging Face tokenizer.json file.
// Supported: BPE models (byte-level like GPT-2 / Llama-3, SentencePiece-style with byte_fallback
// like Llama-2 / Mistral), including the embedded default model's byte tokenizer, which is a
// BPE with 256 <0xNN> byte tokens and no merges (model/byte_tokenizer.h). docs/tokenizers.md
// lists every field read and how each differs from HF, if at all.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace bd {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text` (any bytes). `add_special`: apply the post-processor's template
  // (e.g. a leading BOS); without it no special token is added, though special tokens spelled
  // out in the text are still recognised, as HF does. Throws bd::Error for text the tokenizer
  // cannot take (docs/tokenizers.md): a character without a token, a Unicode normalizer given
  // bytes that are not UTF-8, a normalizer that would multiply the text.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special) const = 0;

  // The text of `ids`, as exact bytes (never U+FFFD substitutions); special tokens appear as
  // their text. Throws bd::Error naming the first id that is not in the vocabulary, or when a
  // decoder would multiply the text (model/tokenizer_decoder.h).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;

  // One past the largest id (ids inside that range may still be unused: decode rejects them).
  virtual int64_t vocab_size() const = 0;

  // -1 if the tokenizer has none. tokenizer.json does not name them; see docs/tokenizers.md for
  // how they are found. A model's config.json bos/eos_token_id take precedence over these.
  virtual int32_t bos_id() const { return -1; }
  virtual int32_t eos_id() const { return -1; }
};

// Reads a Hugging Face tokenizer.json; throws bd::Error naming the file and the field on anything
// malformed or unsupported.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& tokenizer_json_path);

// <model_dir>/tokenizer.json.
std::unique_ptr<Tokenizer> load_tokenizer_for_model(const std::string& model_dir);

// The same from tokenizer.json text; `source` names it in errors (e.g. its path).
std::unique_ptr<Tokenizer> parse_tokenizer_json(std::string_view json_text,
                                                const std::string& source);

}  // namespace bd
