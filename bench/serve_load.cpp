// A load test of a running `bitdelta serve`, from a separate process: C concurrent clients,
// each sending streaming completions one after another for S seconds, spread over every model
// the server lists (the base and each adapter), then waiting for the requests in flight.
//
//   build/serve_load --port P [--host H] [--clients 64] [--seconds 60] [--max-tokens 32]
//                    [--prompt TEXT]
//
// A request counts as failed unless it answers 200 and its stream ends with a finish reason and
// [DONE]. Reports requests, failures, generated tokens per second (over the whole run), latency
// and time to first token (p50, p99), then one JSON line. scripts/serve_load_test.sh starts a
// server on the 1.1B benchmark model with 64 users' adapters and runs this against it.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "util/bench_util.h"

namespace bd {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  int clients = 64;
  double seconds = 60;
  int max_tokens = 32;
  std::string prompt = "The serving benchmark";
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(flag, " needs a value");
      return argv[++i];
    };
    if (flag == "--host")
      o.host = value();
    else if (flag == "--port")
      o.port = std::stoi(value());
    else if (flag == "--clients")
      o.clients = std::stoi(value());
    else if (flag == "--seconds")
      o.seconds = std::stod(value());
    else if (flag == "--max-tokens")
      o.max_tokens = std::stoi(value());
    else if (flag == "--prompt")
      o.prompt = value();
    else
      fail("unknown option ", flag, " (see the comment at the top of bench/serve_load.cpp)");
  }
  if (o.port <= 0) fail("--port is required");
  if (o.clients < 1 || o.seconds <= 0 || o.max_tokens < 1)
    fail("bad --clients/--seconds/--max-tokens");
  return o;
}

struct Result {
  bool ok = false;
  double latency = 0, first_token = 0;
  int64_t tokens = 0;
  std::string why;  // what failed, for the report
};

// One streaming completion; parses the SSE events as they arrive.
Result request(httplib::Client& client, const Options& o, const std::string& model) {
  Result result;
  const json body = {
      {"model", model},     {"prompt", o.prompt}, {"max_tokens", o.max_tokens},
      {"temperature", 0.7}, {"stream", true},     {"stream_options", {{"include_usage", true}}}};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string pending;
  bool done = false, finished = false;
  const auto start = Clock::now();
  req.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
    pending.append(data, length);
    for (size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") {
        done = true;
        continue;
      }
      const json chunk = json::parse(payload, nullptr, false);
      if (chunk.is_discarded() || chunk.contains("error")) {
        result.why = "bad event: " + payload.substr(0, 200);
        return false;
      }
      if (chunk.contains("usage") && chunk["usage"].is_object())
        result.tokens = chunk["usage"]["completion_tokens"];
      for (const json& choice : chunk.value("choices", json::array())) {
        if (result.first_token == 0 && !choice.value("text", "").empty())
          result.first_token = std::chrono::duration<double>(Clock::now() - start).count();
        if (!choice["finish_reason"].is_null()) finished = true;
      }
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error;
  const bool sent = client.send(req, res, error);
  result.latency = std::chrono::duration<double>(Clock::now() - start).count();
  result.ok = sent && res.status == 200 && done && finished;
  if (!result.ok && result.why.empty())
    result.why = !sent ? "not sent: " + httplib::to_string(error)
                       : "status " + std::to_string(res.status) + (done ? "" : ", no [DONE]") +
                             (finished ? "" : ", no finish reason") + " " + res.body.substr(0, 200);
  return result;
}

// 0 when no request succeeded (the failures are reported).
double percentile(const std::vector<double>& values, double p) {
  return values.empty() ? 0.0 : bench::percentile(values, p);
}

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  httplib::Client probe(o.host, o.port);
  const httplib::Result models_res = probe.Get("/v1/models");
  if (!models_res || models_res->status != 200) fail("GET /v1/models failed: is the server up?");
  const json listed = json::parse(models_res->body);
  std::vector<std::string> models;
  for (const json& m : listed["data"]) models.push_back(m["id"]);
  if (models.empty()) fail("the server lists no models");

  std::mutex mutex;
  std::vector<Result> results;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(o.seconds);
  std::vector<std::thread> clients;
  for (int c = 0; c < o.clients; ++c)
    clients.emplace_back([&, c] {
      httplib::Client client(o.host, o.port);
      client.set_read_timeout(600, 0);
      for (size_t i = 0; Clock::now() < deadline; ++i) {
        const Result r =
            request(client, o, models[(size_t(c) + i * size_t(o.clients)) % models.size()]);
        std::lock_guard<std::mutex> lock(mutex);
        results.push_back(r);
      }
    });
  for (std::thread& t : clients) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();

  int64_t failures = 0, tokens = 0;
  std::vector<double> latency, first;
  for (const Result& r : results) {
    if (!r.ok) {
      if (failures < 5)
        std::fprintf(stderr, "failed request (after %.1f s): %s\n", r.latency, r.why.c_str());
      ++failures;
      continue;
    }
    tokens += r.tokens;
    latency.push_back(r.latency);
    first.push_back(r.first_token);
  }
  const json out = {{"clients", o.clients},
                    {"seconds", wall},
                    {"models", models.size()},
                    {"requests", results.size()},
                    {"failures", failures},
                    {"completion_tokens", tokens},
                    {"tokens_per_s", double(tokens) / wall},
                    {"requests_per_s", double(results.size()) / wall},
                    {"latency_p50_s", percentile(latency, 0.5)},
                    {"latency_p99_s", percentile(latency, 0.99)},
                    {"ttft_p50_s", percentile(first, 0.5)},
                    {"ttft_p99_s", percentile(first, 0.99)}};
  std::printf(
      "%d clients, %.0f s, %zu models: %zu requests, %lld failed; %.1f tokens/s; latency "
      "p50 %.2f s p99 %.2f s; time to first token p50 %.2f s p99 %.2f s\n%s\n",
      o.clients, wall, models.size(), results.size(), (long long)failures, double(tokens) / wall,
      percentile(latency, 0.5), percentile(latency, 0.99), percentile(first, 0.5),
      percentile(first, 0.99), out.dump().c_str());
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace bd

int main(int argc, char** argv) {
  return bd::bench::guarded_main("serve_load", bd::run, argc, argv);
}
