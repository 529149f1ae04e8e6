// Unicode helpers for tokenizers: UTF-8 scanning that never fails on bad bytes, the character
// classes the pre-tokenizer patterns use (\p{L}, \p{N}, \s), Unicode normal forms, and GPT-2's
// byte <-> printable-character map. Categories and normal forms come from ICU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bd::unicode {

// A code point read from UTF-8. Bytes that do not start a well-formed sequence (stray
// continuation bytes, overlong forms, surrogates, truncated sequences) are read one at a time
// as kInvalid, so every byte string scans, and scanning is lossless.
constexpr int32_t kInvalid = -1;
struct CodePoint {
  int32_t value;  // kInvalid for a malformed byte
  int length;     // bytes consumed, 1..4
};
CodePoint decode_utf8(std::string_view text, size_t pos);

void append_utf8(std::string& out, uint32_t code_point);
std::string replace_all(std::string_view text, std::string_view from, std::string_view to);
// The length replace_all(text, from, to) would have, found without building it, so that callers
// can refuse a replacement that would grow text without bound before allocating it.
size_t replaced_size(std::string_view text, std::string_view from, std::string_view to);
bool is_valid_utf8(std::string_view text);

bool is_letter(int32_t cp);      // \p{L}: Lu Ll Lt Lm Lo
bool is_number(int32_t cp);      // \p{N}: Nd Nl No
bool is_whitespace(int32_t cp);  // \s: the White_Space property
bool is_word_char(int32_t cp);   // \w: letters, marks, numbers, connector punctuation

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// Throws bd::Error if `text` is not valid UTF-8 (`what` names the step for the message).
std::string normalize(std::string_view text, NormalForm form, std::string_view what);

// GPT-2's reversible map from each byte to one printable character ('Ġ' for a space), so that
// byte-level vocabularies are plain strings.
const std::string& byte_to_unicode(uint8_t byte);  // UTF-8 of the character
int byte_from_unicode(int32_t cp);                 // the byte, or -1 if cp is not in the map

}  // namespace bd::unicode
