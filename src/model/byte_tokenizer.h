// The embedded default model's tokenizer: one token per byte, plus BOS and EOS.
//   ids 0..255  the bytes 0x00..0xFF (tokens "<0x00>".."<0xFF>")
//   id  256     <|bos|>  (special; add_special puts it first)
//   id  257     <|eos|>  (special)
// It is written as a standard Hugging Face tokenizer.json: a BPE model with byte_fallback, the
// 256 byte tokens and no merges, so no character is in the vocabulary and every byte falls back
// to its own token; the decoder is ByteFallback + Fuse. HF tools load it as it is.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "model/tokenizer.h"

namespace bd {

constexpr int32_t kByteBosId = 256;
constexpr int32_t kByteEosId = 257;
constexpr int64_t kByteVocabSize = 258;

// The tokenizer.json text (what the trainer writes into checkpoints).
std::string byte_tokenizer_json();

// The same tokenizer, without a file.
std::unique_ptr<Tokenizer> make_byte_tokenizer();

}  // namespace bd
