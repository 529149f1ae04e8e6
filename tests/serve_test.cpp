// bitdelta serve end to end, on the default model with two bundled users' adapters: the same
// greedy text through the server (alone and batched with other users), `generate --delta` and
// the model `apply` writes; streaming; the official openai npm client; OpenAI-style errors for
// bad requests; adapters added, replaced and deleted while serving; API keys with owners; a
// client that leaves mid-stream; clean shutdown on SIGINT and SIGTERM. Each test starts its own
// server on a free loopback port.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/mapped_file.h"
#include "serve_util.h"
#include "test_util.h"

namespace bd {
namespace {

using json = nlohmann::json;
using test::ScratchDir;
using test::ServerProcess;
using test::shell_quote;

const std::string kPrompt = "The computer";
constexpr int kTokens = 40;

class Serve : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string users = test::bundled_user_adapters();
    std::filesystem::create_directories(adapters());
    for (const std::string user : {"zippy", "tao"})
      std::filesystem::copy_file(users + "/" + user + ".bitdelta",
                                 adapters() + "/" + user + ".bitdelta");
  }
  std::string adapters() const { return scratch_ / "adapters"; }
  std::string start_arguments() const { return "--adapters " + shell_quote(adapters()); }

  ScratchDir scratch_;
};

// Generous timeouts: under the sanitizers six concurrent generations take longer than httplib's
// default 5 s read timeout.
void be_patient(httplib::Client& client) {
  client.set_read_timeout(600, 0);
  client.set_write_timeout(600, 0);
}

httplib::Result post(httplib::Client& client, const std::string& path, const json& body,
                     const httplib::Headers& headers = {}) {
  return client.Post(path.c_str(), headers, body.dump(), "application/json");
}

json completion_body(const std::string& model, int tokens = kTokens) {
  return {{"model", model}, {"prompt", kPrompt}, {"max_tokens", tokens}, {"temperature", 0}};
}

std::string completion_text(httplib::Client& client, const std::string& model) {
  const httplib::Result res = post(client, "/v1/completions", completion_body(model));
  if (!res || res->status != 200) return "<error>";
  return json::parse(res->body)["choices"][0]["text"];
}

// `bitdelta generate` greedy text of the prompt (with --delta, or on a dense model folder).
std::string generate_text(const std::string& model_arguments, const ScratchDir& scratch) {
  const test::CommandResult run =
      test::run_bitdelta("generate " + model_arguments + " --prompt " + shell_quote(kPrompt) +
                             " -n " + std::to_string(kTokens) + " --temperature 0 --json",
                         scratch);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  return run.exit_code == 0 ? json::parse(run.out)["text"].get<std::string>() : "<failed>";
}

TEST_F(Serve, GreedyTextIsTheSameAloneBatchedThroughGenerateAndTheAppliedModel) {
  std::map<std::string, std::string> want;
  for (const std::string user : {"zippy", "tao"}) {
    const std::string delta = adapters() + "/" + user + ".bitdelta";
    want[user] = generate_text("--delta " + shell_quote(delta), scratch_);
    const test::CommandResult apply = test::run_bitdelta(
        "apply --base " + shell_quote(test::default_model_dir()) + " --delta " +
            shell_quote(delta) + " -o " + shell_quote(scratch_ / user) + " --dtype f32",
        scratch_);
    ASSERT_EQ(apply.exit_code, 0) << apply.err;
    EXPECT_EQ(generate_text("--model " + shell_quote(scratch_ / user), scratch_), want[user]);
  }
  want["base"] = generate_text("", scratch_);
  EXPECT_NE(want["zippy"], want["tao"]);
  EXPECT_NE(want["zippy"], want["base"]);

  ServerProcess server(start_arguments());
  httplib::Client client("127.0.0.1", server.port());
  be_patient(client);
  for (const auto& [model, text] : want) EXPECT_EQ(completion_text(client, model), text) << model;
  // All three users at once, twice each: one batch holds several adapters.
  std::vector<std::future<std::pair<std::string, std::string>>> replies;
  for (int round = 0; round < 2; ++round)
    for (const auto& [model, text] : want)
      replies.push_back(std::async(std::launch::async, [port = server.port(), model = model] {
        httplib::Client c("127.0.0.1", port);
        be_patient(c);
        return std::make_pair(model, completion_text(c, model));
      }));
  for (auto& reply : replies) {
    const auto [model, text] = reply.get();
    EXPECT_EQ(text, want[model]) << model << " batched";
  }
  // Some step ran more than one sequence: the batch sizes sum to more than the step count.
  const std::string metrics = client.Get("/metrics")->body;
  std::smatch sum, count;
  ASSERT_TRUE(std::regex_search(metrics, sum, std::regex("\nbitdelta_batch_size_sum ([0-9.e+]+)")));
  ASSERT_TRUE(
      std::regex_search(metrics, count, std::regex("\nbitdelta_batch_size_count ([0-9]+)")));
  EXPECT_GT(std::stod(sum[1]), std::stod(count[1]));
  // And some step held more than one adapter, but never more adapters than sequences.
  std::smatch adapter_sum, adapter_count;
  ASSERT_TRUE(std::regex_search(metrics, adapter_sum,
                                std::regex("\nbitdelta_step_adapters_sum ([0-9.e+]+)")));
  ASSERT_TRUE(std::regex_search(metrics, adapter_count,
                                std::regex("\nbitdelta_step_adapters_count ([0-9]+)")));
  EXPECT_EQ(std::stoll(adapter_count[1]), std::stoll(count[1]));
  EXPECT_GT(std::stod(adapter_sum[1]), std::stod(adapter_count[1]));
  EXPECT_LE(std::stod(adapter_sum[1]), std::stod(sum[1]));
  // The two users' adapters were loaded once each, and their loads took time.
  std::smatch loads, load_seconds;
  ASSERT_TRUE(
      std::regex_search(metrics, loads, std::regex("\nbitdelta_adapter_loads_total ([0-9]+)")));
  ASSERT_TRUE(std::regex_search(
      metrics, load_seconds, std::regex("\nbitdelta_adapter_load_seconds_total ([0-9.e+-]+)\n")));
  EXPECT_EQ(std::stoll(loads[1]), 2);
  EXPECT_GT(std::stod(load_seconds[1]), 0.0);
  EXPECT_EQ(server.stop(), 0) << server.stderr_text();
}

TEST_F(Serve, StreamingSendsTheSameTextThenUsageAndDone) {
  ServerProcess server(start_arguments());
  httplib::Client client("127.0.0.1", server.port());
  be_patient(client);
  const std::string whole = completion_text(client, "zippy");
  json body = completion_body("zippy");
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  const httplib::Result res = post(client, "/v1/completions", body);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  std::string streamed, finish;
  json usage;
  bool done = false;
  std::istringstream events(res->body);
  for (std::string line; std::getline(events, line);) {
    if (line.empty()) continue;
    ASSERT_EQ(line.rfind("data: ", 0), 0u) << line;
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      done = true;
      continue;
    }
    const json chunk = json::parse(data);
    EXPECT_EQ(chunk["object"], "text_completion");
    if (chunk.contains("usage")) usage = chunk["usage"];
    for (const json& choice : chunk["choices"]) {
      streamed += choice["text"].get<std::string>();
      if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
    }
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(streamed, whole);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(usage["completion_tokens"], kTokens);
  EXPECT_EQ(usage["total_tokens"], usage["prompt_tokens"].get<int>() + kTokens);
}

TEST_F(Serve, TheOpenAiNodeClientWorksUnchanged) {
  const std::string node_dir = std::string(BITDELTA_SOURCE_DIR) + "/tests/node";
  ASSERT_TRUE(std::filesystem::exists(node_dir + "/node_modules/openai"))
      << "the openai npm package is missing: run scripts/install-deps.sh --test";
  const std::string want =
      generate_text("--delta " + shell_quote(adapters() + "/tao.bitdelta"), scratch_);
  ServerProcess server(start_arguments());
  const json expected = {
      {"model", "tao"}, {"prompt", kPrompt}, {"max_tokens", kTokens}, {"text", want}};
  const test::CommandResult run =
      test::run_command("node " + shell_quote(node_dir + "/openai_client.mjs") + " " +
                            std::to_string(server.port()) + " " + shell_quote(expected.dump()),
                        scratch_);
  EXPECT_EQ(run.exit_code, 0) << run.err << run.out;
  EXPECT_EQ(server.stop(), 0);
}

TEST_F(Serve, BadRequestsGetOpenAiStyleErrors) {
  ServerProcess server(start_arguments() + " --max-tokens 64");
  httplib::Client client("127.0.0.1", server.port());
  be_patient(client);
  struct Case {
    const char* what;
    std::string path, body, content_type;
    int status;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"malformed JSON", "/v1/completions", "{\"model\": ", "application/json", 400,
       "not valid JSON"},
      {"not an object", "/v1/completions", "[1]", "application/json", 400, "JSON object"},
      {"unknown model", "/v1/completions", R"({"model": "nobody", "prompt": "x"})",
       "application/json", 404, "does not exist"},
      {"negative max_tokens", "/v1/completions",
       R"({"model": "base", "prompt": "x", "max_tokens": -1})", "application/json", 400,
       "max_tokens must be in [1, 64]"},
      {"huge max_tokens", "/v1/completions",
       R"({"model": "base", "prompt": "x", "max_tokens": 100000})", "application/json", 400,
       "max_tokens"},
      {"max_tokens of the wrong type", "/v1/completions",
       R"({"model": "base", "prompt": "x", "max_tokens": "ten"})", "application/json", 400,
       "'max_tokens' must be an integer"},
      {"no prompt", "/v1/completions", R"({"model": "base"})", "application/json", 400,
       "'prompt' is required"},
      {"n > 1", "/v1/completions", R"({"model": "base", "prompt": "x", "n": 2})",
       "application/json", 400, "n = 1"},
      {"bad temperature", "/v1/completions",
       R"({"model": "base", "prompt": "x", "temperature": -1})", "application/json", 400,
       "temperature"},
      {"bad role", "/v1/chat/completions",
       R"({"model": "base", "messages": [{"role": "robot", "content": "x"}]})", "application/json",
       400, "unknown message role"},
      {"wrong content type", "/v1/completions", R"({"model": "base", "prompt": "x"})", "text/plain",
       415, "application/json"},
      {"oversized prompt", "/v1/completions",
       json({{"model", "base"}, {"prompt", std::string(300, 'a')}}).dump(), "application/json", 400,
       "context"},
      {"oversized body", "/v1/completions",
       json({{"model", "base"}, {"prompt", std::string(2 << 20, 'a')}}).dump(), "application/json",
       413, "limit"},
      {"no such endpoint", "/v1/nothing", "{}", "application/json", 404, "no such endpoint"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const httplib::Result res = client.Post(c.path.c_str(), c.body, c.content_type.c_str());
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, c.status);
    const json error = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(error.contains("error")) << res->body;
    EXPECT_NE(error["error"]["message"].get<std::string>().find(c.message), std::string::npos)
        << res->body;
    EXPECT_TRUE(error["error"]["type"].is_string());
  }
  // The server is still there and serves.
  EXPECT_EQ(completion_text(client, "base").size() > 0, true);
  EXPECT_EQ(server.stop(SIGINT), 0) << server.stderr_text();
}

TEST_F(Serve, AdaptersAreAddedReplacedAndDeletedWhileServing) {
  ServerProcess server(start_arguments());
  httplib::Client client("127.0.0.1", server.port());
  be_patient(client);
  const std::string zippy_text = completion_text(client, "zippy");
  const std::string tao_text = completion_text(client, "tao");
  const std::string zippy = read_file(adapters() + "/zippy.bitdelta");
  const std::string tao = read_file(adapters() + "/tao.bitdelta");

  // Upload zippy's adapter as "newcomer": created, listed, served.
  httplib::Result res = client.Put("/v1/adapters/newcomer", zippy, "application/octet-stream");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 201) << res->body;
  EXPECT_EQ(json::parse(res->body)["owner"], "did:lux:zippy");
  EXPECT_EQ(completion_text(client, "newcomer"), zippy_text);
  res = client.Get("/v1/models");
  EXPECT_NE(res->body.find("\"newcomer\""), std::string::npos);
  // Replaced by tao's: the next request runs the new version.
  res = client.Put("/v1/adapters/newcomer", tao, "application/octet-stream");
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(completion_text(client, "newcomer"), tao_text);
  // Invalid uploads change nothing.
  res = client.Put("/v1/adapters/newcomer", "not an adapter", "application/octet-stream");
  EXPECT_EQ(res->status, 400) << res->body;
  EXPECT_EQ(completion_text(client, "newcomer"), tao_text);
  res = client.Put("/v1/adapters/.hidden", tao, "application/octet-stream");
  EXPECT_EQ(res->status, 400);
  res = client.Put("/v1/adapters/x", tao, "application/json");
  EXPECT_EQ(res->status, 415);
  EXPECT_EQ(test::folder_entries(adapters()).size(), 3u);  // no temporary file left
  // Deleted: gone from the list and from service.
  res = client.Delete("/v1/adapters/newcomer");
  EXPECT_EQ(res->status, 200);
  res = post(client, "/v1/completions", completion_body("newcomer"));
  EXPECT_EQ(res->status, 404);
  res = client.Delete("/v1/adapters/newcomer");
  EXPECT_EQ(res->status, 404);
  res = client.Get("/v1/adapters/zippy");
  ASSERT_EQ(res->status, 200);
  EXPECT_EQ(json::parse(res->body)["granularity"], "matrix");
  EXPECT_EQ(server.stop(), 0);
}

TEST_F(Serve, ApiKeysLetOwnersReachOnlyTheirAdapters) {
  const std::string keys = scratch_.write(
      "keys.json", R"({"keys": [{"key": "sk-zippy-0123456789abcdef", "owner": "did:lux:zippy"},
                                {"key": "sk-admin-0123456789abcdef", "admin": true}]})");
  ServerProcess server(start_arguments() + " --api-keys " + shell_quote(keys));
  httplib::Client client("127.0.0.1", server.port());
  be_patient(client);
  const httplib::Headers zippy = {{"Authorization", "Bearer sk-zippy-0123456789abcdef"}};
  const httplib::Headers admin = {{"Authorization", "Bearer sk-admin-0123456789abcdef"}};
  const httplib::Headers wrong = {{"Authorization", "Bearer sk-zippy-0123456789abcdeX"}};
  EXPECT_EQ(post(client, "/v1/completions", completion_body("zippy", 4))->status, 401);
  EXPECT_EQ(post(client, "/v1/completions", completion_body("zippy", 4), wrong)->status, 401);
  EXPECT_EQ(post(client, "/v1/completions", completion_body("zippy", 4), zippy)->status, 200);
  EXPECT_EQ(post(client, "/v1/completions", completion_body("base", 4), zippy)->status, 200);
  EXPECT_EQ(post(client, "/v1/completions", completion_body("tao", 4), zippy)->status, 403);
  EXPECT_EQ(post(client, "/v1/completions", completion_body("tao", 4), admin)->status, 200);
  const json models = json::parse(client.Get("/v1/models", zippy)->body);
  std::vector<std::string> ids;
  for (const json& m : models["data"]) ids.push_back(m["id"]);
  EXPECT_EQ(ids, (std::vector<std::string>{"base", "zippy"}));
  const std::string tao = read_file(adapters() + "/tao.bitdelta");
  EXPECT_EQ(client.Put("/v1/adapters/mine", zippy, tao, "application/octet-stream")->status, 403);
  EXPECT_EQ(client.Delete("/v1/adapters/tao", zippy)->status, 403);
  EXPECT_EQ(client.Put("/v1/adapters/mine", admin, tao, "application/octet-stream")->status, 201);
  EXPECT_EQ(client.Get("/health")->status, 200);  // health and metrics stay open
  EXPECT_EQ(server.stop(), 0);
  EXPECT_EQ(server.stderr_text().find("sk-"), std::string::npos);  // keys are never logged
}

// A raw socket that asks for a long stream, reads its first bytes and hangs up.
void stream_and_hang_up(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(uint16_t(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  const std::string body =
      R"({"model": "zippy", "prompt": "The computer", "max_tokens": 500, "stream": true})";
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(::send(fd, request.data(), request.size(), 0), ssize_t(request.size()));
  char buffer[512];
  ASSERT_GT(::recv(fd, buffer, sizeof buffer, 0), 0);
  ::close(fd);
}

TEST_F(Serve, AClientThatLeavesMidStreamIsCleanedUpAndSignalsStopTheServer) {
  ServerProcess server(start_arguments() + " --max-tokens 512");
  httplib::Client client("127.0.0.1", server.port());
  be_patient(client);
  for (int i = 0; i < 3; ++i) stream_and_hang_up(server.port());
  // The abandoned sequences leave the batch and give their KV blocks back.
  auto gauge = [&](const std::string& name) {
    const std::string text = client.Get("/metrics")->body;
    const std::regex line("\n" + name + " ([0-9]+)\n");
    std::smatch match;
    return std::regex_search(text, match, line) ? std::stoll(match[1]) : -1;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((gauge("bitdelta_cancelled_total") < 3 || gauge("bitdelta_running_sequences") != 0 ||
          gauge("bitdelta_kv_blocks_used") != 0) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(gauge("bitdelta_cancelled_total"), 3);
  EXPECT_EQ(gauge("bitdelta_running_sequences"), 0);
  EXPECT_EQ(gauge("bitdelta_kv_blocks_used"), 0);
  EXPECT_FALSE(completion_text(client, "tao").empty());
  // SIGTERM while a request runs: it finishes (or is cancelled) and the server exits 0.
  auto running = std::async(std::launch::async, [port = server.port()] {
    httplib::Client c("127.0.0.1", port);
    be_patient(c);
    return post(c, "/v1/completions", completion_body("zippy", 200));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(server.stop(SIGTERM), 0) << server.stderr_text();
  const httplib::Result res = running.get();
  if (res) {
    EXPECT_TRUE(res->status == 200 || res->status == 503) << res->status;
  }
  EXPECT_NE(server.stderr_text().find("stopped"), std::string::npos);
}

}  // namespace
}  // namespace bd
