#include "model/tokenizer_unicode.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <array>

#include "core/error.h"

namespace bd::unicode {

CodePoint decode_utf8(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return uint8_t(text[i]); };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) return {lead, 1};
  int length = 0;
  uint32_t cp = 0, min_value = 0;
  if (lead >= 0xC2 && lead <= 0xDF)
    length = 2, cp = lead & 0x1F, min_value = 0x80;
  else if (lead >= 0xE0 && lead <= 0xEF)
    length = 3, cp = lead & 0x0F, min_value = 0x800;
  else if (lead >= 0xF0 && lead <= 0xF4)
    length = 4, cp = lead & 0x07, min_value = 0x10000;
  else
    return {kInvalid, 1};
  if (pos + length > text.size()) return {kInvalid, 1};
  for (int i = 1; i < length; ++i) {
    const uint8_t next = byte(pos + i);
    if ((next & 0xC0) != 0x80) return {kInvalid, 1};
    cp = (cp << 6) | (next & 0x3F);
  }
  // Overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8.
  if (cp < min_value || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return {kInvalid, 1};
  return {int32_t(cp), length};
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t previous = 0;
  for (size_t pos = text.find(from); pos != std::string_view::npos;
       pos = text.find(from, pos + from.size())) {
    out.append(text.substr(previous, pos - previous));
    out.append(to);
    previous = pos + from.size();
  }
  out.append(text.substr(previous));
  return out;
}

size_t replaced_size(std::string_view text, std::string_view from, std::string_view to) {
  if (from.empty()) return text.size();
  size_t count = 0;
  for (size_t pos = text.find(from); pos != std::string_view::npos;
       pos = text.find(from, pos + from.size()))
    ++count;
  return text.size() - count * from.size() + count * to.size();
}

bool is_valid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const CodePoint cp = decode_utf8(text, pos);
    if (cp.value == kInvalid) return false;
    pos += cp.length;
  }
  return true;
}

bool is_letter(int32_t cp) {
  if (cp < 0x80) return cp >= 0 && ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z');
  return (U_GET_GC_MASK(cp) & U_GC_L_MASK) != 0;
}

bool is_number(int32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return (U_GET_GC_MASK(cp) & U_GC_N_MASK) != 0;
}

bool is_whitespace(int32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= '\t' && cp <= '\r');
  return u_isUWhiteSpace(cp);
}

bool is_word_char(int32_t cp) {
  if (cp == kInvalid) return false;
  return (U_GET_GC_MASK(cp) & (U_GC_L_MASK | U_GC_M_MASK | U_GC_N_MASK | U_GC_PC_MASK)) != 0;
}

std::string normalize(std::string_view text, NormalForm form, std::string_view what) {
  if (!is_valid_utf8(text))
    fail(what, ": the text is not valid UTF-8, which Unicode normalization needs");
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  switch (form) {
    case NormalForm::kNfc:
      normalizer = icu::Normalizer2::getNFCInstance(status);
      break;
    case NormalForm::kNfd:
      normalizer = icu::Normalizer2::getNFDInstance(status);
      break;
    case NormalForm::kNfkc:
      normalizer = icu::Normalizer2::getNFKCInstance(status);
      break;
    case NormalForm::kNfkd:
      normalizer = icu::Normalizer2::getNFKDInstance(status);
      break;
  }
  if (U_FAILURE(status)) fail(what, ": ICU normalizer unavailable (", u_errorName(status), ")");
  const icu::UnicodeString input =
      icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), int32_t(text.size())));
  const icu::UnicodeString output = normalizer->normalize(input, status);
  if (U_FAILURE(status)) fail(what, ": normalization failed (", u_errorName(status), ")");
  std::string result;
  output.toUTF8String(result);
  return result;
}

namespace {

// GPT-2's table: printable Latin-1 bytes stand for themselves; the other 68 bytes (controls,
// space, DEL, NBSP, soft hyphen) map, in byte order, to U+0100 onwards.
struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 0x200> from_unicode;  // every mapped code point is below U+0200

  ByteMap() {
    from_unicode.fill(-1);
    int next_extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(0x100 + next_extra++);
      append_utf8(to_unicode[b], cp);
      from_unicode[cp] = int16_t(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t byte) {
  return byte_map().to_unicode[byte];
}

int byte_from_unicode(int32_t cp) {
  if (cp < 0 || cp >= int32_t(byte_map().from_unicode.size())) return -1;
  return byte_map().from_unicode[cp];
}

}  // namespace bd::unicode
