// The ABI types the abi fuzz target decodes (the first input byte picks one): what
// `bitdelta registry` decodes from a node's replies (registry/registry_client.cpp), plus nested
// dynamic types. Shared with make_fuzz_seeds, whose seeds are valid encodings of each.
#pragma once
#include <array>

namespace bd::fuzz {

inline constexpr std::array<const char*, 6> kAbiTypes = {
    "((address,bytes32,uint32,bool,uint64,uint8,bytes32,address,uint64))",  // getDelta
    "((bytes32,bytes32,string,address,uint32,bool,uint64,uint256))",        // getSoup
    "(bytes32[],address[],uint16[])",                                       // soupContributors
    "(string)",                                                             // Error(string)
    "(address,(bytes32,uint64,bytes),bytes[],string[][])",                  // nesting
    "(bytes32[])",                                                          // deltasOf
};

}  // namespace bd::fuzz
