// Recursive Length Prefix, Ethereum's serialisation of transactions (ethereum.org, "RLP"):
// a byte string or a list of already encoded items, each prefixed by its length.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace bd {

std::string rlp_string(std::string_view bytes);
std::string rlp_list(const std::vector<std::string>& encoded_items);

}  // namespace bd
