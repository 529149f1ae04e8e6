// libFuzzer target: the contract ABI decoder (src/trust/abi.h) and revert reasons
// (src/registry/json_rpc.h) on arbitrary bytes: what `bitdelta registry` reads from a node.
//
// Input: one byte choosing a type of abi_types.h, then the data. An accepted decoding must
// encode again (its canonical layout), and the decoder must accept that and give back the same
// values (decode ∘ encode ∘ decode = decode). The whole input, as the data of an Error(string)
// revert, goes through revert_reason.
#include <nlohmann/json.hpp>

#include "abi_types.h"
#include "fuzz_util.h"
#include "registry/json_rpc.h"
#include "trust/abi.h"

namespace {

using bd::fuzz::die;

bool same(const bd::AbiValue& a, const bd::AbiValue& b) {
  if (a.word != b.word || a.bytes != b.bytes || a.items.size() != b.items.size()) return false;
  for (size_t i = 0; i < a.items.size(); ++i)
    if (!same(a.items[i], b.items[i])) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bd::AbiType type =
      bd::parse_abi_type(bd::fuzz::kAbiTypes[data[0] % bd::fuzz::kAbiTypes.size()]);
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  bd::AbiValue value;
  if (!bd::fuzz::refused([&] { value = bd::abi_decode(type, input); })) {
    std::string encoded;
    bd::AbiValue again;
    if (bd::fuzz::refused([&] { encoded = bd::abi_encode(type, value); }))
      die("a decoded value does not encode again");
    if (bd::fuzz::refused([&] { again = bd::abi_decode(type, encoded); }))
      die("the canonical encoding of a decoded value is refused");
    if (!same(value, again)) die("decode(encode(decode(x))) differs from decode(x)");
  }
  const nlohmann::json error = {{"data", "0x08c379a0" + bd::to_hex(std::span(data, size))}};
  bd::fuzz::refused([&] { (void)bd::revert_reason(error); });
  return 0;
}
