// Ethereum's JSON-RPC over HTTP (ethereum.org, "JSON-RPC API"): one POST per call, the node's
// errors turned into one-line messages, with a contract's revert reason when it gave one.
// Works against any EVM node that speaks it (ganache, geth, anvil, a provider's URL).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace bd {

class JsonRpc {
 public:
  // url: http://host[:port][/path] or https://…
  explicit JsonRpc(std::string url);
  // The call's "result"; throws bd::Error naming the method and the node's message (a revert:
  // "reverted: <reason>") when the node answers with an error or cannot be reached.
  nlohmann::json call(const std::string& method, nlohmann::json params) const;
  const std::string& url() const { return url_; }

 private:
  std::string url_, origin_, path_;
};

// A revert reason from a node's error object: Error(string) data as a hex string (geth, anvil)
// or inside an object (ganache: {"reason": …} or {"result": "0x08c379a0…"}); "" when none.
std::string revert_reason(const nlohmann::json& error);

}  // namespace bd
