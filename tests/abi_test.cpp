// The contract ABI codec (trust/abi.h) against the worked examples of the Solidity
// documentation's "Contract ABI Specification" (selectors and encodings, byte for byte), and
// decoding as the inverse of encoding; malformed types and data are refused.
#include "trust/abi.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace bd {
namespace {

AbiValue number(uint64_t value) {
  return abi_word(abi_uint(value));
}

AbiValue fixed(std::string text) {  // bytesN: right-padded
  AbiWord word{};
  std::copy(text.begin(), text.end(), word.begin());
  return abi_word(word);
}

// `count` zeros, then `digits`.
std::string zeros_then(size_t count, const char* digits) {
  std::string text(count, '0');
  text += digits;
  return text;
}

std::string hex(const std::string& bytes) {
  return to_hex(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

TEST(Abi, WordsAreBigEndianAndLeftPadded) {
  EXPECT_EQ(to_hex(abi_uint(0x0102030405060708u)), zeros_then(48, "0102030405060708"));
  EXPECT_EQ(to_hex(abi_bool(true)), zeros_then(63, "1"));
  const Address address = parse_address("0x2c7536E3605D9C16a7a3D7b1898e529396a65c23");
  EXPECT_EQ(to_hex(abi_address(address)),
            zeros_then(24, "2c7536e3605d9c16a7a3d7b1898e529396a65c23"));
  EXPECT_EQ(abi_to_address(abi_address(address)), address);
  EXPECT_EQ(abi_to_uint64(abi_uint(77)), 77u);
}

// baz(uint32,bool) with 69, true.
TEST(Abi, DocumentationExampleBaz) {
  EXPECT_EQ(hex(function_selector("baz(uint32,bool)")), "cdcd77c0");
  const AbiType args = parse_abi_type("(uint32,bool)");
  EXPECT_EQ(hex(abi_encode(args, abi_list({number(69), abi_word(abi_bool(true))}))),
            zeros_then(62, "45") + zeros_then(63, "1"));
}

// sam(bytes,bool,uint256[]) with "dave", true, [1, 2, 3].
TEST(Abi, DocumentationExampleSam) {
  EXPECT_EQ(hex(function_selector("sam(bytes,bool,uint256[])")), "a5643bf2");
  const AbiType args = parse_abi_type("(bytes,bool,uint256[])");
  const AbiValue value = abi_list(
      {abi_bytes("dave"), abi_word(abi_bool(true)), abi_list({number(1), number(2), number(3)})});
  const std::string expected =
      "0000000000000000000000000000000000000000000000000000000000000060"
      "0000000000000000000000000000000000000000000000000000000000000001"
      "00000000000000000000000000000000000000000000000000000000000000a0"
      "0000000000000000000000000000000000000000000000000000000000000004"
      "6461766500000000000000000000000000000000000000000000000000000000"
      "0000000000000000000000000000000000000000000000000000000000000003"
      "0000000000000000000000000000000000000000000000000000000000000001"
      "0000000000000000000000000000000000000000000000000000000000000002"
      "0000000000000000000000000000000000000000000000000000000000000003";
  const std::string encoded = abi_encode(args, value);
  EXPECT_EQ(hex(encoded), expected);
  const AbiValue back = abi_decode(args, encoded);
  EXPECT_EQ(back.items[0].bytes, "dave");
  EXPECT_EQ(abi_to_uint64(back.items[1].word), 1u);
  ASSERT_EQ(back.items[2].items.size(), 3u);
  EXPECT_EQ(abi_to_uint64(back.items[2].items[2].word), 3u);
}

// f(uint256,uint32[],bytes10,bytes) with 0x123, [0x456, 0x789], "1234567890", "Hello, world!".
TEST(Abi, DocumentationExampleWithDynamicTypes) {
  EXPECT_EQ(hex(function_selector("f(uint256,uint32[],bytes10,bytes)")), "8be65246");
  const AbiType args = parse_abi_type("(uint256,uint32[],bytes10,bytes)");
  EXPECT_EQ(args.canonical(), "(uint256,uint32[],bytes10,bytes)");
  const AbiValue value = abi_list({number(0x123), abi_list({number(0x456), number(0x789)}),
                                   fixed("1234567890"), abi_bytes("Hello, world!")});
  const std::string expected =
      "0000000000000000000000000000000000000000000000000000000000000123"
      "0000000000000000000000000000000000000000000000000000000000000080"
      "3132333435363738393000000000000000000000000000000000000000000000"
      "00000000000000000000000000000000000000000000000000000000000000e0"
      "0000000000000000000000000000000000000000000000000000000000000002"
      "0000000000000000000000000000000000000000000000000000000000000456"
      "0000000000000000000000000000000000000000000000000000000000000789"
      "000000000000000000000000000000000000000000000000000000000000000d"
      "48656c6c6f2c20776f726c642100000000000000000000000000000000000000";
  const std::string encoded = abi_encode(args, value);
  EXPECT_EQ(hex(encoded), expected);
  const AbiValue back = abi_decode(args, encoded);
  EXPECT_EQ(back.items[3].bytes, "Hello, world!");
  EXPECT_EQ(abi_to_uint64(back.items[1].items[1].word), 0x789u);
}

// A tuple holding a dynamic member is itself dynamic: an offset in the head (the registry's
// publishBitDelta takes such an attestation tuple).
TEST(Abi, NestedDynamicTuplesRoundTrip) {
  const AbiType args = parse_abi_type("(address,(bytes32,uint64,bytes),bytes)");
  EXPECT_TRUE(args.items[1].dynamic());
  const AbiValue value =
      abi_list({number(5), abi_list({number(6), number(7), abi_bytes(std::string(65, 'x'))}),
                abi_bytes("")});
  const std::string encoded = abi_encode(args, value);
  EXPECT_EQ(encoded.size() % 32, 0u);
  const AbiValue back = abi_decode(args, encoded);
  EXPECT_EQ(back.items[1].items[2].bytes, std::string(65, 'x'));
  EXPECT_EQ(abi_to_uint64(back.items[1].items[1].word), 7u);
  EXPECT_EQ(back.items[2].bytes, "");
}

TEST(Abi, RefusesMalformedTypesAndData) {
  for (const char* bad : {"int256", "uint7", "uint264", "bytes33", "uint256[2]", "(uint256",
                          "(uint256,)", "foo", "uint256 x"})
    EXPECT_THROW(parse_abi_type(bad), Error) << bad;
  const AbiType args = parse_abi_type("(bytes)");
  EXPECT_THROW(abi_decode(args, std::string(31, '\0')), Error);
  std::string huge_offset(64, '\0');
  huge_offset[0] = 1;  // an offset far past the data
  EXPECT_THROW(abi_decode(args, huge_offset), Error);
  EXPECT_THROW(abi_encode(args, abi_list({})), Error);
  // A nested tuple given the wrong number of members is refused too, not filled with zeros.
  EXPECT_THROW(abi_encode(parse_abi_type("((uint8,uint8))"), abi_list({abi_list({})})), Error);
  EXPECT_THROW(abi_to_uint64(AbiWord{1}), Error);
  // 1,000 heads of a string[][] all pointing at one array of 1,000 offsets to one 2 KB string:
  // 66 KB of data that would decode to 2 GB. Refused, not allocated.
  const AbiType nested = parse_abi_type("(string[][])");
  std::string bomb;
  auto put = [&](uint64_t v) {
    bomb += std::string(reinterpret_cast<const char*>(abi_uint(v).data()), 32);
  };
  const uint64_t n = 1000;
  put(32);                                       // offset of the outer array
  put(n);                                        // its length
  for (uint64_t i = 0; i < n; ++i) put(32 * n);  // every element: the same inner array
  put(n);                                        // the inner array's length
  for (uint64_t i = 0; i < n; ++i) put(32 * n);  // every string: the same one
  put(2048);
  bomb += std::string(2048, 'x');
  try {
    abi_decode(nested, bomb);
    ADD_FAILURE() << "the aliased offsets were decoded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("offsets reused"), std::string::npos) << e.what();
  }
  // The budget leaves honest data alone: a long array of distinct items decodes.
  EXPECT_EQ(abi_decode(parse_abi_type("(uint256[])"),
                       [&] {
                         std::string data;
                         auto word = [&](uint64_t v) {
                           data +=
                               std::string(reinterpret_cast<const char*>(abi_uint(v).data()), 32);
                         };
                         word(32);
                         word(3000);
                         for (uint64_t i = 0; i < 3000; ++i) word(i);
                         return data;
                       }())
                .items[0]
                .items.size(),
            3000u);
}

}  // namespace
}  // namespace bd
