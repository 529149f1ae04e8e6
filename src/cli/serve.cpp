// bitdelta serve: the OpenAI-compatible server over one base model and a directory of adapters.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/checkpoint.h"
#include "kernels/matmul_panels.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "serve/adapter_cache.h"
#include "serve/api_keys.h"
#include "serve/engine.h"
#include "serve/metrics.h"
#include "serve/server.h"

namespace bd {

namespace {

const CommandSpec kSpec = {
    "serve",
    "[--model DIR] --adapters DIR [--host ADDR] [--port N] [--api-keys FILE] [--max-batch N] "
    "[--kv-blocks N] [--max-tokens N] [--cache-adapters N] [--cache-bytes N] "
    "[--max-upload-bytes N] [--threads N] [--access-log]",
    "Serves the base model and every NAME.bitdelta in the adapter directory (as model NAME; the\n"
    "base is model \"base\") over an OpenAI-compatible HTTP API: /v1/models, /v1/completions,\n"
    "/v1/chat/completions (streaming with \"stream\": true), adapter upload and deletion under\n"
    "/v1/adapters/NAME, /health and /metrics. Requests of many users run in the same forward "
    "step.\n"
    "Adapters load lazily into an LRU cache and can be added, replaced and deleted while it runs.\n"
    "Stops cleanly on SIGINT or SIGTERM. docs/serving.md has the details.",
    {
        {"--model", "DIR", "Hugging Face model folder (default: the embedded default model)"},
        {"--adapters", "DIR", "directory of NAME.bitdelta adapters (uploads are written there)"},
        {"--host", "ADDR", "address to listen on (default 127.0.0.1)"},
        {"--port", "N", "port (default 8080; 0: any free port, printed at start)"},
        {"--api-keys", "FILE",
         "JSON key file: requests need 'Authorization: Bearer KEY', owners reach only their "
         "adapters"},
        {"--max-batch", "N", "sequences in one forward step (default 64)"},
        {"--kv-blocks", "N", "KV cache blocks of 16 positions (default 2048)"},
        {"--max-tokens", "N", "largest max_tokens a request may ask for (default 512)"},
        {"--cache-adapters", "N", "adapters kept loaded (default 10000)"},
        {"--cache-bytes", "N",
         "bytes of loaded adapters: files plus transposed signs (default 16 GiB)"},
        {"--max-upload-bytes", "N", "largest adapter upload (default 1 GiB)"},
        {"--threads", "N", "compute threads (default: all cores)"},
        {"--access-log", "", "print one line per request on stderr"},
    },
};

}  // namespace

int run_serve(int argc, char** argv) {
  Args args(kSpec, argc, argv);
  const std::string adapter_dir = args.require("--adapters");
  EngineOptions engine_options;
  engine_options.max_batch = args.get_int("--max-batch", 64);
  engine_options.kv_blocks = args.get_int("--kv-blocks", 2048);
  engine_options.max_tokens_limit = args.get_int("--max-tokens", 512);
  AdapterCacheOptions cache_options;
  cache_options.max_count = args.get_int("--cache-adapters", 10000);
  cache_options.max_bytes = args.get_int("--cache-bytes", int64_t(16) << 30);
  cache_options.max_upload_bytes = args.get_int("--max-upload-bytes", int64_t(1) << 30);
  ServerOptions server_options;
  server_options.host = args.get("--host", "127.0.0.1");
  const int64_t port = args.get_int("--port", 8080);
  if (port < 0 || port > 65535) throw UsageError("--port must be in [0, 65535]");
  server_options.port = int(port);
  server_options.access_log = args.has("--access-log");
  if (engine_options.max_batch < 1 || engine_options.max_batch > 4096)
    throw UsageError("--max-batch must be in [1, 4096]");
  if (engine_options.kv_blocks < 1) throw UsageError("--kv-blocks must be positive");
  if (engine_options.max_tokens_limit < 1) throw UsageError("--max-tokens must be positive");
  set_threads(int(args.get_int("--threads", 0)));

  // SIGINT and SIGTERM go to one thread that stops the server (blocked here, before any other
  // thread starts, so that every thread inherits the mask).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const Checkpoint checkpoint(model_dir_or_default(args));
  LlamaWeights weights = weights_from_checkpoint(checkpoint);
  const auto copying = std::chrono::steady_clock::now();
  const int64_t copied_bytes = copy_linears_for_decode(weights);
  if (copied_bytes > 0)
    std::fprintf(stderr, "bitdelta serve: %.0f MiB of weights copied into huge pages%s in %.1f s\n",
                 double(copied_bytes) / (1 << 20), panels_preferred() ? " as panels" : "",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - copying).count());
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer_for_model(checkpoint.dir());
  std::unique_ptr<ApiKeys> keys;
  if (args.has("--api-keys")) keys = std::make_unique<ApiKeys>(args.get("--api-keys"));
  AdapterCache adapters(checkpoint, weights, adapter_dir, cache_options);
  Metrics metrics;
  Engine engine(weights, *tokenizer, adapters, metrics, engine_options);
  Server server(engine, adapters, *tokenizer, metrics, keys.get(), server_options);
  server.bind();
  engine.start();

  std::thread signal_thread([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    if (signal != 0) server.stop();
  });
  std::fprintf(stderr,
               "bitdelta serve: listening on http://%s:%d (base %s, %zu adapters in %s%s)\n",
               server_options.host.c_str(), server.bound_port(), checkpoint.dir().c_str(),
               adapters.list().size(), adapter_dir.c_str(), keys ? ", API keys required" : "");
  std::fflush(stderr);
  server.listen();
  std::fprintf(stderr, "bitdelta serve: stopping (running requests get %d s to finish)\n", 5);
  engine.stop();
  // listen() also returns when the socket fails; wake the signal thread so it can end.
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  std::fprintf(stderr, "bitdelta serve: stopped\n");
  return 0;
}

}  // namespace bd
