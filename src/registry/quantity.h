// 256-bit unsigned quantities (wei, gas prices) as the ABI lays them out: a 32-byte big-endian
// word. Parsed from and printed as JSON-RPC hex quantities ("0x1a", no leading zeros) and as
// decimal text (what users type for wei); the little arithmetic fees need. Everything checks
// for overflow: a quantity that does not fit is an error, never a wrapped number.
#pragma once
#include <string>
#include <string_view>

#include "trust/abi.h"

namespace bd {

using Quantity = AbiWord;

Quantity quantity_from_hex(std::string_view hex);  // "0x…" (JSON-RPC), at most 64 digits
std::string quantity_hex(const Quantity& q);       // "0x0", "0x1a"
Quantity quantity_from_decimal(std::string_view digits);
std::string quantity_decimal(const Quantity& q);
Quantity quantity_add(const Quantity& a, const Quantity& b);
Quantity quantity_times(const Quantity& a, uint32_t factor);
bool quantity_is_zero(const Quantity& q);
// Big-endian bytes without leading zeros (RLP's integers; zero is the empty string).
std::string quantity_minimal_bytes(const Quantity& q);

}  // namespace bd
