#include "registry/json_rpc.h"

#include <httplib.h>

#include <atomic>

#include "core/error.h"
#include "trust/abi.h"

namespace bd {

namespace {

// Error(string) revert data: selector 0x08c379a0, then the ABI-encoded message.
std::string decode_error_data(const std::string& hex) {
  std::vector<uint8_t> bytes;
  try {
    bytes = from_hex(hex);
  } catch (const Error&) {
    return "";
  }
  const std::string data(bytes.begin(), bytes.end());
  if (data.size() < 4 || data.substr(0, 4) != function_selector("Error(string)")) return "";
  try {
    return abi_decode(parse_abi_type("(string)"), std::string_view(data).substr(4)).items[0].bytes;
  } catch (const Error&) {
    return "";
  }
}

}  // namespace

std::string revert_reason(const nlohmann::json& error) {
  if (!error.is_object() || !error.contains("data")) return "";
  const nlohmann::json& data = error["data"];
  if (data.is_string()) return decode_error_data(data.get<std::string>());
  if (data.is_object()) {
    if (data.contains("reason") && data["reason"].is_string()) return data["reason"];
    if (data.contains("result") && data["result"].is_string())
      return decode_error_data(data["result"].get<std::string>());
  }
  return "";
}

JsonRpc::JsonRpc(std::string url) : url_(std::move(url)) {
  const size_t scheme = url_.find("://");
  if (scheme == std::string::npos ||
      (url_.substr(0, scheme) != "http" && url_.substr(0, scheme) != "https"))
    fail("--rpc ", url_, ": expected http://host:port or https://host/path");
  const size_t slash = url_.find('/', scheme + 3);
  origin_ = slash == std::string::npos ? url_ : url_.substr(0, slash);
  path_ = slash == std::string::npos ? "/" : url_.substr(slash);
  if (origin_.size() == scheme + 3) fail("--rpc ", url_, ": no host");
}

nlohmann::json JsonRpc::call(const std::string& method, nlohmann::json params) const {
  static std::atomic<int64_t> next_id{1};
  const nlohmann::json request = {
      {"jsonrpc", "2.0"}, {"id", next_id++}, {"method", method}, {"params", std::move(params)}};
  httplib::Client client(origin_);
  client.set_connection_timeout(10);
  client.set_read_timeout(60);
  const httplib::Result response = client.Post(path_, request.dump(), "application/json");
  if (!response)
    fail("cannot reach the node at ", url_, " (", httplib::to_string(response.error()), ")");
  if (response->status != 200)
    fail("the node at ", url_, " answered ", method, " with HTTP ", response->status);
  nlohmann::json reply;
  try {
    reply = nlohmann::json::parse(response->body);
  } catch (const nlohmann::json::exception&) {
    fail("the node at ", url_, " answered ", method, " with something that is not JSON");
  }
  if (reply.contains("error") && !reply["error"].is_null()) {
    const nlohmann::json& error = reply["error"];
    const std::string reason = revert_reason(error);
    if (!reason.empty()) fail(method, ": reverted: ", reason);
    fail(method, ": ", error.is_object() ? error.value("message", error.dump()) : error.dump());
  }
  if (!reply.contains("result")) fail("the node's answer to ", method, " has no result");
  return reply["result"];
}

}  // namespace bd
