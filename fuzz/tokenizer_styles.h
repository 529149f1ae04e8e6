// Small tokenizer.json files in each style bitdelta supports (docs/tokenizers.md), built here so
// that the fuzz targets need no downloaded vocabulary: a few hundred tokens and merges of common
// English pieces, enough for merges, byte fallback and special tokens to happen on any text.
#pragma once
#include <string>
#include <vector>

namespace bd::fuzz {

struct TokenizerStyle {
  std::string name;
  std::string json;  // the tokenizer.json text
};

// GPT-2: ByteLevel pre-tokenizer (built-in regex, no prefix space) and decoder, merges as
// "a b" strings, <|endoftext|>. Round-trips every byte string.
std::string gpt2_style_json();
// Llama-3: Split with the cl100k regex, ByteLevel without regex, ignore_merges, merges as pairs,
// <|begin_of_text|> put first by a TemplateProcessing. Round-trips every byte string.
std::string llama3_style_json();
// Qwen2: NFC normalizer, Split with the Qwen2 regex, ByteLevel. Refuses text that is not UTF-8.
std::string qwen2_style_json();
// Llama-2 (SentencePiece): Prepend("▁") + Replace(" ", "▁") normalizer, no pre-tokenizer,
// byte_fallback, <unk>/<s>/</s>, decoder Replace/ByteFallback/Fuse/Strip. Round-trips text
// without "▁" and without the special tokens' text.
std::string llama2_style_json();
// SentencePiece with Metaspace (prepend_scheme "first") pre-tokenizer and decoder. Round-trips
// text without "▁", without the special tokens' text, that does not start with a space.
std::string metaspace_style_json();

std::vector<TokenizerStyle> tokenizer_styles();  // the five above, by name

}  // namespace bd::fuzz
