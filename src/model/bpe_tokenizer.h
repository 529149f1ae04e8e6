// A Hugging Face tokenizer.json with a BPE model, run through HF's pipeline:
//   added tokens (raw) → normalizer → added tokens (normalized) → pre-tokenizer → BPE per word
//   → post-processor (only with add_special);  decoding: id → token string → decoder.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include "model/pretokenize.h"
#include "model/tokenizer.h"
#include "model/tokenizer_added_tokens.h"
#include "model/tokenizer_bpe_model.h"
#include "model/tokenizer_decoder.h"
#include "model/tokenizer_normalizer.h"

namespace bd {

class BpeTokenizer : public Tokenizer {
 public:
  // `config` is the whole tokenizer.json; `source` names it in errors.
  BpeTokenizer(const nlohmann::json& config, const std::string& source);

  std::vector<int32_t> encode(std::string_view text, bool add_special) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }

 private:
  void read_post_processor(const nlohmann::json& config, const std::string& where);
  void find_bos_eos();

  std::string source_;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  BpeModel model_;
  AddedTokens added_;
  TokenDecoder decoder_;
  // What add_special puts around a single sequence.
  std::vector<int32_t> special_prefix_, special_suffix_;
  int32_t bos_id_ = -1, eos_id_ = -1;
};

}  // namespace bd
