#include "trust/abi.h"

#include <algorithm>
#include <cctype>

#include "core/error.h"

namespace bd {

namespace {

// A type's text at [pos, end): parses one type and advances pos.
AbiType parse_at(std::string_view text, size_t& pos) {
  AbiType type;
  if (pos < text.size() && text[pos] == '(') {
    type.kind = AbiType::Kind::tuple;
    ++pos;
    if (pos < text.size() && text[pos] == ')') {
      ++pos;
    } else {
      while (true) {
        type.items.push_back(parse_at(text, pos));
        if (pos >= text.size()) fail("ABI type '", text, "': missing ')'");
        if (text[pos] == ')') {
          ++pos;
          break;
        }
        if (text[pos] != ',') fail("ABI type '", text, "': expected ',' or ')' at ", pos);
        ++pos;
      }
    }
  } else {
    size_t end = pos;
    while (end < text.size() && (std::isalnum(static_cast<unsigned char>(text[end])))) ++end;
    const std::string_view name = text.substr(pos, end - pos);
    pos = end;
    auto number = [&](std::string_view digits) {
      int value = 0;
      if (digits.empty() || digits.size() > 3 || digits[0] == '0')
        fail("ABI type '", text, "': bad size in '", name, "'");
      for (char c : digits) {
        if (c < '0' || c > '9') fail("ABI type '", text, "': bad size in '", name, "'");
        value = value * 10 + (c - '0');
      }
      return value;
    };
    if (name == "bool") {
      type.kind = AbiType::Kind::boolean;
    } else if (name == "address") {
      type.kind = AbiType::Kind::address;
    } else if (name == "bytes") {
      type.kind = AbiType::Kind::bytes;
    } else if (name == "string") {
      type.kind = AbiType::Kind::string;
    } else if (name.substr(0, 4) == "uint") {
      type.kind = AbiType::Kind::uint;
      type.size = name.size() == 4 ? 256 : number(name.substr(4));
      if (type.size % 8 != 0 || type.size > 256) fail("ABI type '", text, "': bad uint size");
    } else if (name.substr(0, 5) == "bytes") {
      type.kind = AbiType::Kind::fixed_bytes;
      type.size = number(name.substr(5));
      if (type.size > 32) fail("ABI type '", text, "': bytesN takes N ≤ 32");
    } else {
      fail("ABI type '", text, "': unsupported type '", name, "'");
    }
  }
  while (pos < text.size() && text[pos] == '[') {
    if (pos + 1 >= text.size() || text[pos + 1] != ']')
      fail("ABI type '", text, "': only dynamic arrays T[] are supported");
    pos += 2;
    AbiType array;
    array.kind = AbiType::Kind::array;
    array.items = {type};
    type = array;
  }
  return type;
}

void pad_to_word(std::string& out) {
  out.append((32 - out.size() % 32) % 32, '\0');
}

// Bytes a static type takes in a head: a word, or a static tuple's members one after another.
size_t static_size(const AbiType& type) {
  if (type.kind != AbiType::Kind::tuple) return 32;
  size_t size = 0;
  for (const AbiType& t : type.items) size += static_size(t);
  return size;
}

std::string encode(const AbiType& type, const AbiValue& value);

// A tuple's members (or an array's elements) as heads, then tails.
std::string encode_sequence(const std::vector<const AbiType*>& types,
                            const std::vector<AbiValue>& values) {
  if (types.size() != values.size())
    fail("ABI: ", values.size(), " values for ", types.size(), " types");
  size_t head_size = 0;
  for (const AbiType* t : types) head_size += t->dynamic() ? 32 : static_size(*t);
  std::string head, tail;
  for (size_t i = 0; i < types.size(); ++i) {
    const std::string part = encode(*types[i], values[i]);
    if (types[i]->dynamic()) {
      const AbiWord offset = abi_uint(head_size + tail.size());
      head.append(reinterpret_cast<const char*>(offset.data()), 32);
      tail += part;
    } else {
      head += part;
    }
  }
  return head + tail;
}

std::string encode(const AbiType& type, const AbiValue& value) {
  switch (type.kind) {
    case AbiType::Kind::uint:
    case AbiType::Kind::boolean:
    case AbiType::Kind::address:
    case AbiType::Kind::fixed_bytes:
      return std::string(reinterpret_cast<const char*>(value.word.data()), 32);
    case AbiType::Kind::bytes:
    case AbiType::Kind::string: {
      const AbiWord length = abi_uint(value.bytes.size());
      std::string out(reinterpret_cast<const char*>(length.data()), 32);
      out += value.bytes;
      pad_to_word(out);
      return out;
    }
    case AbiType::Kind::array: {
      const AbiWord length = abi_uint(value.items.size());
      std::vector<const AbiType*> types(value.items.size(), &type.items[0]);
      return std::string(reinterpret_cast<const char*>(length.data()), 32) +
             encode_sequence(types, value.items);
    }
    case AbiType::Kind::tuple: {
      std::vector<const AbiType*> types;
      for (const AbiType& t : type.items) types.push_back(&t);
      return encode_sequence(types, value.items);
    }
  }
  return {};
}

uint64_t read_length(std::string_view data, size_t at) {
  if (at + 32 > data.size()) fail("ABI data: ", data.size(), " bytes, too short");
  AbiWord word;
  std::copy(data.begin() + long(at), data.begin() + long(at) + 32, word.begin());
  const uint64_t value = abi_to_uint64(word);
  if (value > data.size()) fail("ABI data: offset or length ", value, " past its end");
  return value;
}

// How much decoding may still produce: offsets may point many heads at one tail, so hostile data
// of a few KB could otherwise decode to gigabytes.
struct Budget {
  size_t left;
  void spend(size_t bytes) {
    if (bytes > left) fail("ABI data: decodes to far more than its size (offsets reused)");
    left -= bytes;
  }
};

AbiValue decode(const AbiType& type, std::string_view data, size_t at, Budget& budget);

// Members at data[base ...]: heads in order, dynamic ones pointing into the same frame.
std::vector<AbiValue> decode_sequence(const std::vector<const AbiType*>& types,
                                      std::string_view data, size_t base, Budget& budget) {
  std::vector<AbiValue> values;
  size_t head = base;
  for (const AbiType* t : types) {
    if (t->dynamic()) {
      values.push_back(decode(*t, data, base + read_length(data, head), budget));
      head += 32;
    } else {
      values.push_back(decode(*t, data, head, budget));
      head += static_size(*t);
    }
  }
  return values;
}

AbiValue decode(const AbiType& type, std::string_view data, size_t at, Budget& budget) {
  budget.spend(sizeof(AbiValue));
  AbiValue value;
  switch (type.kind) {
    case AbiType::Kind::uint:
    case AbiType::Kind::boolean:
    case AbiType::Kind::address:
    case AbiType::Kind::fixed_bytes:
      if (at + 32 > data.size()) fail("ABI data: ", data.size(), " bytes, too short");
      std::copy(data.begin() + long(at), data.begin() + long(at) + 32, value.word.begin());
      return value;
    case AbiType::Kind::bytes:
    case AbiType::Kind::string: {
      const uint64_t length = read_length(data, at);
      if (at + 32 + length > data.size()) fail("ABI data: bytes past its end");
      budget.spend(length);
      value.bytes = std::string(data.substr(at + 32, length));
      return value;
    }
    case AbiType::Kind::array: {
      const uint64_t count = read_length(data, at);
      budget.spend(count * sizeof(AbiValue));
      std::vector<const AbiType*> types(count, &type.items[0]);
      value.items = decode_sequence(types, data, at + 32, budget);
      return value;
    }
    case AbiType::Kind::tuple: {
      std::vector<const AbiType*> types;
      for (const AbiType& t : type.items) types.push_back(&t);
      value.items = decode_sequence(types, data, at, budget);
      return value;
    }
  }
  return value;
}

}  // namespace

bool AbiType::dynamic() const {
  if (kind == Kind::bytes || kind == Kind::string || kind == Kind::array) return true;
  return kind == Kind::tuple &&
         std::any_of(items.begin(), items.end(), [](const AbiType& t) { return t.dynamic(); });
}

std::string AbiType::canonical() const {
  switch (kind) {
    case Kind::uint:
      return "uint" + std::to_string(size);
    case Kind::boolean:
      return "bool";
    case Kind::address:
      return "address";
    case Kind::fixed_bytes:
      return "bytes" + std::to_string(size);
    case Kind::bytes:
      return "bytes";
    case Kind::string:
      return "string";
    case Kind::array:
      return items[0].canonical() + "[]";
    case Kind::tuple: {
      std::string out = "(";
      for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + items[i].canonical();
      return out + ")";
    }
  }
  return {};
}

AbiType parse_abi_type(std::string_view text) {
  size_t pos = 0;
  AbiType type = parse_at(text, pos);
  if (pos != text.size()) fail("ABI type '", text, "': unexpected text at ", pos);
  return type;
}

AbiWord abi_uint(uint64_t value) {
  AbiWord word{};
  for (int i = 0; i < 8; ++i) word[size_t(31 - i)] = uint8_t(value >> (8 * i));
  return word;
}

AbiWord abi_bool(bool value) {
  return abi_uint(value ? 1 : 0);
}

AbiWord abi_address(const Address& address) {
  AbiWord word{};
  std::copy(address.begin(), address.end(), word.begin() + 12);
  return word;
}

AbiWord abi_bytes32(const Hash32& bytes) {
  return bytes;
}

AbiValue abi_word(const AbiWord& word) {
  return AbiValue{word, {}, {}};
}
AbiValue abi_bytes(std::string bytes) {
  return AbiValue{{}, std::move(bytes), {}};
}
AbiValue abi_list(std::vector<AbiValue> items) {
  return AbiValue{{}, {}, std::move(items)};
}

std::string abi_encode(std::initializer_list<AbiWord> words) {
  std::string out;
  for (const AbiWord& word : words) out.append(reinterpret_cast<const char*>(word.data()), 32);
  return out;
}

std::string abi_encode(const AbiType& tuple, const AbiValue& value) {
  if (tuple.kind != AbiType::Kind::tuple)
    fail("abi_encode: ", tuple.canonical(), " is not a tuple");
  if (value.items.size() != tuple.items.size())
    fail("abi_encode: ", value.items.size(), " values for ", tuple.canonical());
  return encode(tuple, value);
}

AbiValue abi_decode(const AbiType& tuple, std::string_view data) {
  if (tuple.kind != AbiType::Kind::tuple)
    fail("abi_decode: ", tuple.canonical(), " is not a tuple");
  // Canonical data decodes to about its own size (a value per word); allow a generous multiple.
  Budget budget{64 * data.size() + 4096 * sizeof(AbiValue)};
  return decode(tuple, data, 0, budget);
}

std::string function_selector(std::string_view signature) {
  const Hash32 hash = keccak256(signature);
  return std::string(reinterpret_cast<const char*>(hash.data()), 4);
}

Hash32 event_topic(std::string_view signature) {
  return keccak256(signature);
}

uint64_t abi_to_uint64(const AbiWord& word) {
  for (size_t i = 0; i < 24; ++i)
    if (word[i] != 0) fail("ABI: a number larger than 2^64 - 1 where one was expected");
  uint64_t value = 0;
  for (size_t i = 24; i < 32; ++i) value = (value << 8) | word[i];
  return value;
}

Address abi_to_address(const AbiWord& word) {
  Address address;
  std::copy(word.begin() + 12, word.end(), address.begin());
  return address;
}

}  // namespace bd
