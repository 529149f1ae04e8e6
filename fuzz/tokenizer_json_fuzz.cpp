// libFuzzer target: bd::parse_tokenizer_json (src/model/tokenizer.h) on arbitrary tokenizer.json
// text, then encode and decode with whatever tokenizer it accepts.
//
// Input: the tokenizer.json text, then the separator line "\n--8<--\n" (fuzz_util.h), then the
// text to encode (empty when there is no separator; parts after the second are ignored). The text
// also gives ids to decode: each pair of its bytes is one id, spread over [-2, vocab_size + 2).
// Promises checked (docs/tokenizers.md): bos/eos ids are -1 or in the vocabulary; encode may refuse
// text (no byte fallback and no unk, a Unicode normalizer on non-UTF-8, a normalizer that
// multiplies text) but every id it gives lies in [0, vocab_size) and is known to decode.
#include "fuzz_util.h"
#include "model/tokenizer.h"

namespace {

using bd::fuzz::die;
using Ids = std::vector<int32_t>;

void check_in_vocabulary(const bd::Tokenizer& tokenizer, const Ids& ids, const char* what) {
  for (int32_t id : ids)
    if (id < 0 || id >= tokenizer.vocab_size())
      die(std::string(what) + " gave id " + std::to_string(id) + ", vocab_size is " +
          std::to_string(tokenizer.vocab_size()));
}

void check_encode(const bd::Tokenizer& tokenizer, std::string_view text, bool add_special) {
  Ids ids;
  if (bd::fuzz::refused([&] { ids = tokenizer.encode(text, add_special); })) return;
  check_in_vocabulary(tokenizer, ids, "encode");
  // decode may refuse a decoder that multiplies text, but never an id that encode gave.
  std::string message;
  if (bd::fuzz::refused([&] { tokenizer.decode(ids); }, &message) &&
      message.find("not in the vocabulary") != std::string::npos)
    die("decode refused an id that encode gave: " + message);
}

Ids ids_from(std::string_view text, int64_t vocab_size) {
  Ids ids;
  const int64_t range = vocab_size + 4;
  for (size_t i = 0; i + 1 < text.size(); i += 2) {
    const int64_t raw = uint8_t(text[i]) * 256 + uint8_t(text[i + 1]);
    ids.push_back(int32_t(raw % range - 2));
  }
  return ids;
}

void check_tokenizer(const bd::Tokenizer& tokenizer, std::string_view text) {
  const int64_t vocab_size = tokenizer.vocab_size();
  if (vocab_size < 0 || vocab_size > (int64_t(1) << 24)) die("vocab_size out of range");
  for (int32_t id : {tokenizer.bos_id(), tokenizer.eos_id()})
    if (id < -1 || id >= vocab_size) die("bos/eos id " + std::to_string(id) + " out of range");
  check_encode(tokenizer, text, false);
  check_encode(tokenizer, text, true);
  bd::fuzz::refused([&] { tokenizer.decode(ids_from(text, vocab_size)); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string_view> parts = bd::fuzz::split_parts(bd::fuzz::as_text(data, size));
  const std::string_view text = parts.size() > 1 ? parts[1] : std::string_view();
  std::unique_ptr<bd::Tokenizer> tokenizer;
  if (bd::fuzz::refused([&] { tokenizer = bd::parse_tokenizer_json(parts[0], "tokenizer.json"); }))
    return 0;
  check_tokenizer(*tokenizer, text);
  return 0;
}
