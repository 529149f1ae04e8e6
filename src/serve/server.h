// The OpenAI-compatible HTTP server (cpp-httplib): its routes turn requests into engine
// submissions and stream the engine's output back. docs/serving.md documents every endpoint.
//
//   GET  /health, /metrics
//   GET  /v1/models
//   POST /v1/completions, /v1/chat/completions      (JSON; "stream": true gives SSE)
//   GET  /v1/adapters, /v1/adapters/{id}
//   PUT  /v1/adapters/{id}                          (the .bitdelta file as the body)
//   DELETE /v1/adapters/{id}
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "model/tokenizer.h"
#include "serve/adapter_cache.h"
#include "serve/api_keys.h"
#include "serve/engine.h"
#include "serve/metrics.h"

namespace httplib {
class Server;
}

namespace bd {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                               // 0: any free port (bound_port() tells which)
  int http_threads = 0;                          // 0: 2 × max_batch + 16
  int64_t max_request_bytes = int64_t(1) << 20;  // JSON bodies; uploads use the cache's limit
  bool access_log = false;                       // one line per request on stderr (never the key)
};

class Server {
 public:
  // `keys` may be null: no authentication (for a loopback-only server).
  Server(Engine& engine, AdapterCache& adapters, const Tokenizer& tokenizer, Metrics& metrics,
         const ApiKeys* keys, ServerOptions options);
  ~Server();

  // Binds the socket (throws bd::Error when it cannot); then listen() serves until stop().
  void bind();
  int bound_port() const { return port_; }
  void listen();
  void stop();  // thread-safe, async-signal-unsafe: call it from a normal thread

 private:
  void routes();

  Engine& engine_;
  AdapterCache& adapters_;
  const Tokenizer& tokenizer_;
  Metrics& metrics_;
  const ApiKeys* keys_;
  ServerOptions options_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = -1;
  int listening_socket_ = -1;  // set by the socket options callback, during bind()
  static constexpr int kListenBacklog = 1024;
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace bd
