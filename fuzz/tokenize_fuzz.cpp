// libFuzzer target: the byte tokenizer and a BPE tokenizer of each supported style
// (tokenizer_styles.h) on arbitrary text, plus the three split-regex scanners.
//
// Input: the text, any bytes. For every tokenizer: encode with and without specials, decode, and
// check what docs/tokenizers.md promises:
//   - every id lies in [0, vocab_size) and decode accepts every id encode gives;
//   - add_special only puts the template's tokens around the ids (no style here has a suffix);
//   - decode(encode(text)) == text for the byte, GPT-2 and Llama-3 styles on any bytes; for Qwen2
//     (NFC) it is the NFC form of valid UTF-8; for the SentencePiece styles it holds on text
//     without "▁" and the special tokens' text (and, for Metaspace, not starting with a space);
//   - the byte tokenizer gives one id per byte, the byte's value, when no special is spelled out;
//   - each split regex's matches are non-empty and tile the text.
// bd::Error is accepted only where documented: Qwen2's NFC normalizer refuses non-UTF-8 text.
#include <memory>
#include <optional>

#include "fuzz_util.h"
#include "model/byte_tokenizer.h"
#include "model/pretokenize.h"
#include "model/tokenizer.h"
#include "model/tokenizer_unicode.h"
#include "tokenizer_styles.h"

namespace {

using bd::fuzz::die;
using bd::fuzz::shown;
using Ids = std::vector<int32_t>;

enum class RoundTrip { kAlways, kNfc, kSentencePiece, kMetaspace };

struct Subject {
  std::string name;
  std::unique_ptr<bd::Tokenizer> tokenizer;
  RoundTrip round_trip;
};

std::vector<Subject> make_subjects() {
  std::vector<Subject> subjects;
  subjects.push_back({"byte", bd::make_byte_tokenizer(), RoundTrip::kAlways});
  for (const bd::fuzz::TokenizerStyle& style : bd::fuzz::tokenizer_styles()) {
    const RoundTrip round_trip = style.name == "qwen2"       ? RoundTrip::kNfc
                                 : style.name == "llama2"    ? RoundTrip::kSentencePiece
                                 : style.name == "metaspace" ? RoundTrip::kMetaspace
                                                             : RoundTrip::kAlways;
    subjects.push_back(
        {style.name, bd::parse_tokenizer_json(style.json, style.name + ".json"), round_trip});
  }
  return subjects;
}

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// What decode(encode(text)) must give, or nullopt where nothing is promised.
std::optional<std::string> expected_decoding(std::string_view text, RoundTrip round_trip) {
  const bool spelled_special = contains(text, "<unk>") || contains(text, "<s>") ||
                               contains(text, "</s>") || contains(text, "<|endoftext|>");
  switch (round_trip) {
    case RoundTrip::kAlways:
      return std::string(text);
    case RoundTrip::kNfc:
      // A special token cuts the text, and NFC could join across the cut (">" + U+0338 is "≯").
      if (spelled_special) return std::nullopt;
      return bd::unicode::normalize(text, bd::unicode::NormalForm::kNfc, "NFC");
    case RoundTrip::kMetaspace:
      if (text.starts_with(' ')) return std::nullopt;
      [[fallthrough]];
    case RoundTrip::kSentencePiece:
      if (spelled_special || contains(text, "\u2581")) return std::nullopt;
      return std::string(text);
  }
  return std::nullopt;
}

[[noreturn]] void finding(const Subject& subject, std::string_view text, const std::string& what) {
  die(subject.name + " tokenizer on " + shown(text) + ": " + what);
}

void check_ids(const Subject& subject, std::string_view text, const Ids& ids) {
  for (int32_t id : ids)
    if (id < 0 || id >= subject.tokenizer->vocab_size())
      finding(subject, text, "id " + std::to_string(id) + " outside the vocabulary");
}

void check_tokenizer(const Subject& subject, std::string_view text) {
  const bd::Tokenizer& tokenizer = *subject.tokenizer;
  Ids plain;
  if (bd::fuzz::refused([&] { plain = tokenizer.encode(text, false); })) {
    if (subject.round_trip == RoundTrip::kNfc && !bd::unicode::is_valid_utf8(text)) return;
    finding(subject, text, "encode refused the text");
  }
  check_ids(subject, text, plain);
  const Ids special = tokenizer.encode(text, true);
  Ids wrapped = tokenizer.encode("", true);
  wrapped.insert(wrapped.end(), plain.begin(), plain.end());
  if (special != wrapped) finding(subject, text, "add_special changed more than the template");

  std::string decoded;
  if (bd::fuzz::refused([&] { decoded = tokenizer.decode(plain); }))
    finding(subject, text, "decode refused ids that encode gave");
  const std::optional<std::string> expected = expected_decoding(text, subject.round_trip);
  if (expected && decoded != *expected) finding(subject, text, "decodes to " + shown(decoded));
}

// One id per byte, the byte itself, unless the text spells a special token.
void check_byte_ids(std::string_view text) {
  static const std::unique_ptr<bd::Tokenizer> bytes = bd::make_byte_tokenizer();
  if (contains(text, "<|bos|>") || contains(text, "<|eos|>")) return;
  const Ids ids = bytes->encode(text, false);
  bool same = ids.size() == text.size();
  for (size_t i = 0; same && i < ids.size(); ++i) same = ids[i] == uint8_t(text[i]);
  if (!same) die("byte tokenizer: the ids of " + shown(text) + " are not its bytes");
}

void check_split_regexes(std::string_view text) {
  for (bd::SplitRegex regex :
       {bd::SplitRegex::kGpt2, bd::SplitRegex::kCl100k, bd::SplitRegex::kQwen2}) {
    size_t end = 0;
    for (const bd::ByteRange& match : bd::find_split_regex_matches(text, regex)) {
      if (match.begin != end || match.end <= match.begin || match.end > text.size())
        die("split regex " + std::to_string(int(regex)) + ": matches do not tile " + shown(text));
      end = match.end;
    }
    if (end != text.size()) die("split regex: matches stop before the end of the text");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Subject> subjects = make_subjects();
  const std::string_view text = bd::fuzz::as_text(data, size);
  for (const Subject& subject : subjects) check_tokenizer(subject, text);
  check_byte_ids(text);
  check_split_regexes(text);
  return 0;
}
