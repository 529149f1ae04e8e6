#include "serve/server.h"

#include <sys/socket.h>

#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "serve/chat_template.h"

namespace bd {

using json = nlohmann::json;

namespace {

// Text the engine generated may hold invalid UTF-8 (a byte-level model can emit any byte):
// JSON gets U+FFFD in its place.
std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// An error a handler answers with (OpenAI's error object).
struct HttpError {
  int status;
  std::string message;
  std::string param;
};

const char* error_type(int status) {
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

json error_body(int status, const std::string& message, const std::string& param = "") {
  return {{"error",
           {{"message", message},
            {"type", error_type(status)},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", nullptr}}}};
}

void send_error(httplib::Response& res, int status, const std::string& message,
                const std::string& param = "") {
  res.status = status;
  res.set_content(dump(error_body(status, message, param)), "application/json");
}

void send_json(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

bool has_content_type(const httplib::Request& req, const std::string& type) {
  const std::string value = req.get_header_value("Content-Type");
  return value.compare(0, type.size(), type) == 0;
}

json parse_body(const httplib::Request& req, int64_t max_bytes) {
  if (!has_content_type(req, "application/json"))
    throw HttpError{415, "the body must be JSON (Content-Type: application/json)", ""};
  if (int64_t(req.body.size()) > max_bytes)
    throw HttpError{
        413, cat("the request body has ", req.body.size(), " bytes; the limit is ", max_bytes), ""};
  json body;
  try {
    body = json::parse(req.body);
  } catch (const std::exception& e) {
    throw HttpError{400, escape_bytes(cat("the body is not valid JSON: ", e.what()), 300), ""};
  }
  if (!body.is_object()) throw HttpError{400, "the body must be a JSON object", ""};
  return body;
}

bool present(const json& body, const char* name) {
  return body.contains(name) && !body[name].is_null();
}

int64_t get_int(const json& body, const char* name, int64_t fallback) {
  if (!present(body, name)) return fallback;
  const json& v = body[name];
  if (v.is_number_integer()) return v.get<int64_t>();
  throw HttpError{400, cat("'", name, "' must be an integer"), name};
}

double get_number(const json& body, const char* name, double fallback) {
  if (!present(body, name)) return fallback;
  if (!body[name].is_number()) throw HttpError{400, cat("'", name, "' must be a number"), name};
  return body[name].get<double>();
}

bool get_bool(const json& body, const char* name, bool fallback) {
  if (!present(body, name)) return fallback;
  if (!body[name].is_boolean())
    throw HttpError{400, cat("'", name, "' must be true or false"), name};
  return body[name].get<bool>();
}

std::string get_string(const json& body, const char* name) {
  if (!present(body, name) || !body[name].is_string())
    throw HttpError{400, cat("'", name, "' must be a string"), name};
  return body[name].get<std::string>();
}

std::vector<std::string> get_stop(const json& body) {
  if (!present(body, "stop")) return {};
  const json& stop = body["stop"];
  if (stop.is_string()) return {stop.get<std::string>()};
  if (!stop.is_array())
    throw HttpError{400, "'stop' must be a string or an array of strings", "stop"};
  std::vector<std::string> stops;
  for (const json& s : stop) {
    if (!s.is_string())
      throw HttpError{400, "'stop' must be a string or an array of strings", "stop"};
    stops.push_back(s.get<std::string>());
  }
  return stops;
}

// The text of a chat message's content: a string, or an array of {"type": "text", "text": ...}.
std::string message_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {
    std::string text;
    for (const json& part : content) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
          !part["text"].is_string())
        throw HttpError{400, "message content parts must be {\"type\": \"text\", \"text\": ...}",
                        "messages"};
      text += part["text"].get<std::string>();
    }
    return text;
  }
  throw HttpError{400, "a message's 'content' must be a string or an array of text parts",
                  "messages"};
}

json usage_json(int64_t prompt, int64_t completion) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

std::string sse(const json& event) {
  return "data: " + dump(event) + "\n\n";
}

}  // namespace

Server::Server(Engine& engine, AdapterCache& adapters, const Tokenizer& tokenizer, Metrics& metrics,
               const ApiKeys* keys, ServerOptions options)
    : engine_(engine),
      adapters_(adapters),
      tokenizer_(tokenizer),
      metrics_(metrics),
      keys_(keys),
      options_(options),
      http_(std::make_unique<httplib::Server>()) {
  const int threads = options_.http_threads > 0
                          ? options_.http_threads
                          : int(std::min<int64_t>(512, 2 * engine_.options().max_batch + 16));
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  http_->set_payload_max_length(
      size_t(std::max(options_.max_request_bytes, adapters_.options().max_upload_bytes)));
  // The library's own options (address reuse), and the listening socket kept, for bind().
  http_->set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listening_socket_ = sock;
  });
  routes();
}

Server::~Server() = default;

void Server::bind() {
  if (options_.port == 0) {
    port_ = http_->bind_to_any_port(options_.host);
  } else {
    port_ = http_->bind_to_port(options_.host, options_.port) ? options_.port : -1;
  }
  if (port_ < 0)
    fail("cannot listen on ", options_.host, ":", options_.port,
         " (is the address valid and the port free?)");
  // Debian's cpp-httplib (0.11, a shared library) listens with a backlog of 5: a burst of clients
  // overflows it, the kernel answers with SYN cookies and resets some connections about a second
  // in (the load test's 64 clients lost 10–13 requests so). Listening again raises the backlog
  // (the kernel caps it at net.core.somaxconn).
  if (listening_socket_ >= 0 && ::listen(listening_socket_, kListenBacklog) != 0)
    fail("cannot listen on ", options_.host, ":", port_, " with a backlog of ", kListenBacklog);
}

void Server::listen() {
  http_->listen_after_bind();
}

void Server::stop() {
  http_->stop();
}

void Server::routes() {
  // Who is calling: with keys, the holder of a valid "Authorization: Bearer KEY"; without, an
  // admin (the server then listens on loopback for one trusted user).
  auto caller = [this](const httplib::Request& req) -> KeyHolder {
    if (!keys_) return KeyHolder{"", true};
    const std::string header = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (header.compare(0, prefix.size(), prefix) != 0)
      throw HttpError{401, "missing API key: send 'Authorization: Bearer KEY'", ""};
    std::optional<KeyHolder> holder = keys_->find(header.substr(prefix.size()));
    if (!holder) throw HttpError{401, "invalid API key", ""};
    return *holder;
  };
  // An owner reaches only adapters whose metadata names them as owner.
  auto check_access = [this](const KeyHolder& who, const std::string& adapter) {
    if (who.admin || adapter == kBaseModelName || !keys_) return;
    if (!adapters_.exists(adapter))
      throw HttpError{404, cat("the model '", adapter, "' does not exist"), "model"};
    if (adapters_.info(adapter).owner != who.owner)
      throw HttpError{403, cat("the adapter '", adapter, "' belongs to another owner"), "model"};
  };
  // Runs a handler, turning its errors into OpenAI-style error responses.
  auto guarded = [](auto handler) {
    return [handler](const httplib::Request& req, httplib::Response& res) {
      try {
        handler(req, res);
      } catch (const HttpError& e) {
        send_error(res, e.status, e.message, e.param);
      } catch (const RequestError& e) {
        send_error(res, e.status, e.what());
      } catch (const Error& e) {
        send_error(res, 400, e.what());
      } catch (const std::exception& e) {
        send_error(res, 500, cat("internal error: ", e.what()));
      }
    };
  };

  http_->Get("/health", [](const httplib::Request&, httplib::Response& res) {
    send_json(res, {{"status", "ok"}});
  });
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const std::string text = metrics_.render([this](std::string& out) {
      const AdapterCacheStats s = adapters_.stats();
      auto line = [&out](const char* name, const char* type, const char* help, auto value) {
        out += cat("# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ", value,
                   "\n");
      };
      line("bitdelta_adapter_cache_hits_total", "counter", "Adapter lookups served from memory.",
           s.hits);
      line("bitdelta_adapter_cache_misses_total", "counter", "Adapter loads started.", s.misses);
      line("bitdelta_adapter_cache_evictions_total", "counter", "Adapters evicted (LRU).",
           s.evictions);
      line("bitdelta_adapter_loads_total", "counter", "Adapters loaded.", s.loads);
      line("bitdelta_adapter_load_failures_total", "counter", "Adapter loads that failed.",
           s.load_failures);
      line("bitdelta_adapter_load_seconds_total", "counter",
           "Seconds the loads took (on the loader thread).", s.load_seconds);
      line("bitdelta_adapters_resident", "gauge", "Adapters in the cache.", s.resident);
      line("bitdelta_adapter_cache_bytes", "gauge", "Bytes of the cached adapters' files.",
           s.resident_bytes);
    });
    res.set_content(text, "text/plain; version=0.0.4");
  });

  http_->Get("/v1/models",
             guarded([this, caller](const httplib::Request& req, httplib::Response& res) {
               const KeyHolder who = caller(req);
               json data = json::array();
               data.push_back({{"id", kBaseModelName},
                               {"object", "model"},
                               {"created", 0},
                               {"owned_by", "bitdelta"}});
               for (const std::string& name : adapters_.list()) {
                 std::string owner;
                 if (!who.admin || keys_) {
                   try {
                     owner = adapters_.info(name).owner;
                   } catch (const Error&) {
                     continue;  // unreadable: it cannot be served either
                   }
                   if (!who.admin && owner != who.owner) continue;
                 }
                 data.push_back({{"id", name},
                                 {"object", "model"},
                                 {"created", 0},
                                 {"owned_by", owner.empty() ? "bitdelta" : owner}});
               }
               send_json(res, {{"object", "list"}, {"data", data}});
             }));

  auto generate = [this, caller, check_access](bool chat) {
    return [this, caller, check_access, chat](const httplib::Request& req, httplib::Response& res) {
      const KeyHolder who = caller(req);
      const json body = parse_body(req, options_.max_request_bytes);
      GenerationRequest request;
      request.model = get_string(body, "model");
      std::string prompt;
      if (chat) {
        if (!present(body, "messages") || !body["messages"].is_array())
          throw HttpError{400, "'messages' must be an array of messages", "messages"};
        std::vector<ChatMessage> messages;
        for (const json& m : body["messages"]) {
          if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
              !m.contains("content"))
            throw HttpError{400, "each message needs a 'role' and a 'content'", "messages"};
          messages.push_back({m["role"].get<std::string>(), message_text(m["content"])});
        }
        prompt = apply_chat_template(messages);
      } else {
        if (!present(body, "prompt")) throw HttpError{400, "'prompt' is required", "prompt"};
        const json& p = body["prompt"];
        if (p.is_string())
          prompt = p.get<std::string>();
        else if (p.is_array() && p.size() == 1 && p[0].is_string())
          prompt = p[0].get<std::string>();
        else
          throw HttpError{400, "'prompt' must be a string (or an array of one string)", "prompt"};
      }
      if (get_int(body, "n", 1) != 1) throw HttpError{400, "only n = 1 is supported", "n"};
      const int64_t limit = engine_.options().max_tokens_limit;
      request.max_tokens =
          chat ? get_int(body, "max_completion_tokens", get_int(body, "max_tokens", limit))
               : get_int(body, "max_tokens", std::min<int64_t>(16, limit));
      request.stop = get_stop(body);
      if (chat) request.stop.push_back(kChatTurnStop);
      request.sampling.temperature = float(get_number(body, "temperature", 1.0));
      request.sampling.top_p = float(get_number(body, "top_p", 1.0));
      request.sampling.top_k = int(get_int(body, "top_k", 0));
      request.sampling.seed =
          present(body, "seed") ? uint64_t(get_int(body, "seed", 0)) : std::random_device{}();
      const bool stream = get_bool(body, "stream", false);
      const bool include_usage = present(body, "stream_options") &&
                                 body["stream_options"].is_object() &&
                                 get_bool(body["stream_options"], "include_usage", false);
      check_access(who, request.model);
      request.prompt = tokenizer_.encode(prompt, true);

      const std::string model = request.model;
      std::shared_ptr<Generation> generation = engine_.submit(std::move(request));
      const std::string id = cat(chat ? "chatcmpl-" : "cmpl-", std::hex, next_id_++);
      const int64_t created = int64_t(std::time(nullptr));
      const char* object = chat ? "chat.completion" : "text_completion";

      if (!stream) {
        std::string text;
        Generation::Update update;
        do {
          update = generation->next();
          text += update.text;
        } while (!update.finished);
        if (!update.error.empty()) return send_error(res, update.error_status, update.error);
        json choice = {
            {"index", 0}, {"logprobs", nullptr}, {"finish_reason", update.finish_reason}};
        if (chat)
          choice["message"] = {{"role", "assistant"}, {"content", text}};
        else
          choice["text"] = text;
        return send_json(res,
                         {{"id", id},
                          {"object", object},
                          {"created", created},
                          {"model", model},
                          {"choices", json::array({choice})},
                          {"usage", usage_json(update.prompt_tokens, update.completion_tokens)}});
      }

      // Server-sent events: a chunk per piece of text, the finish reason, usage when asked for,
      // then [DONE]. A client that goes away cancels the generation.
      const char* chunk_object = chat ? "chat.completion.chunk" : "text_completion";
      auto chunk = [=](const std::string& text, const json& finish_reason, bool first) {
        json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
        if (chat) {
          choice["delta"] = json::object();
          if (first) choice["delta"]["role"] = "assistant";
          if (!text.empty() || first) choice["delta"]["content"] = text;
        } else {
          choice["text"] = text;
        }
        return json{{"id", id},
                    {"object", chunk_object},
                    {"created", created},
                    {"model", model},
                    {"choices", json::array({choice})}};
      };
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [=](size_t, httplib::DataSink& sink) {
            auto send = [&](const std::string& event) {
              if (sink.write(event.data(), event.size())) return true;
              generation->cancel();
              return false;
            };
            if (chat && !send(sse(chunk("", nullptr, true)))) return false;
            while (true) {
              const Generation::Update update = generation->next();
              if (!update.text.empty() && !send(sse(chunk(update.text, nullptr, false))))
                return false;
              if (update.finished) {
                if (!update.error.empty()) {
                  send(sse(error_body(update.error_status, update.error)));
                } else {
                  if (!send(sse(chunk("", update.finish_reason, false)))) return false;
                  if (include_usage) {
                    json usage = {
                        {"id", id},
                        {"object", chunk_object},
                        {"created", created},
                        {"model", model},
                        {"choices", json::array()},
                        {"usage", usage_json(update.prompt_tokens, update.completion_tokens)}};
                    if (!send(sse(usage))) return false;
                  }
                }
                send("data: [DONE]\n\n");
                sink.done();
                return true;
              }
              if (!sink.is_writable()) {
                generation->cancel();
                return false;
              }
            }
          },
          [generation](bool success) {
            if (!success) generation->cancel();
          });
    };
  };
  http_->Post("/v1/completions", guarded(generate(false)));
  http_->Post("/v1/chat/completions", guarded(generate(true)));

  auto adapter_json = [this](const std::string& name, const AdapterInfo& info) {
    std::error_code ignored;
    return json{{"id", name},
                {"object", "adapter"},
                {"owner", info.owner},
                {"bytes", int64_t(std::filesystem::file_size(adapters_.path_of(name), ignored))},
                {"base_fingerprint", info.base_fingerprint},
                {"finetune_fingerprint", info.finetune_fingerprint},
                {"scale_mode", info.scale_mode},
                {"granularity", info.granularity},
                {"created", info.created},
                {"tool_version", info.tool_version}};
  };
  http_->Get("/v1/adapters", guarded([this, caller, adapter_json](const httplib::Request& req,
                                                                  httplib::Response& res) {
               const KeyHolder who = caller(req);
               json data = json::array();
               for (const std::string& name : adapters_.list()) {
                 try {
                   const AdapterInfo info = adapters_.info(name);
                   if (who.admin || info.owner == who.owner)
                     data.push_back(adapter_json(name, info));
                 } catch (const Error&) {
                 }
               }
               send_json(res, {{"object", "list"}, {"data", data}});
             }));
  http_->Get(R"(/v1/adapters/([^/]+))",
             guarded([this, caller, check_access, adapter_json](const httplib::Request& req,
                                                                httplib::Response& res) {
               const KeyHolder who = caller(req);
               const std::string name = req.matches[1];
               if (!adapters_.exists(name))
                 throw HttpError{404, cat("no adapter named '", name, "'"), ""};
               check_access(who, name);
               send_json(res, adapter_json(name, adapters_.info(name)));
             }));
  http_->Put(R"(/v1/adapters/([^/]+))",
             guarded([this, caller, check_access, adapter_json](const httplib::Request& req,
                                                                httplib::Response& res) {
               const KeyHolder who = caller(req);
               const std::string name = req.matches[1];
               if (!has_content_type(req, "application/octet-stream"))
                 throw HttpError{415, "upload the .bitdelta file as application/octet-stream", ""};
               const bool replacing = adapters_.exists(name);
               if (replacing) check_access(who, name);
               const AdapterInfo info = adapters_.put(name, req.body, [&](const AdapterInfo& a) {
                 if (!who.admin && keys_ && a.owner != who.owner)
                   throw HttpError{403,
                                   cat("the adapter's owner is '", a.owner,
                                       "'; your key belongs to '", who.owner, "'"),
                                   ""};
               });
               send_json(res, adapter_json(name, info), replacing ? 200 : 201);
             }));
  http_->Delete(
      R"(/v1/adapters/([^/]+))",
      guarded([this, caller, check_access](const httplib::Request& req, httplib::Response& res) {
        const KeyHolder who = caller(req);
        const std::string name = req.matches[1];
        if (!adapters_.exists(name)) throw HttpError{404, cat("no adapter named '", name, "'"), ""};
        check_access(who, name);
        adapters_.remove(name);
        send_json(res, {{"id", name}, {"object", "adapter"}, {"deleted", true}});
      }));

  // Errors httplib answers itself (no route, body too large) get the same JSON shape.
  http_->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    const int status = res.status;
    send_error(res, status,
               status == 404   ? "no such endpoint"
               : status == 413 ? "the request body is too large"
                               : cat("HTTP status ", status));
  });
  http_->set_exception_handler([](const httplib::Request&, httplib::Response& res,
                                  std::exception_ptr) { send_error(res, 500, "internal error"); });
  http_->set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    ++metrics_.requests;
    if (res.status >= 400) ++metrics_.request_errors;
    if (options_.access_log)
      std::fprintf(stderr, "%s %s %d\n", req.method.c_str(), escape_bytes(req.path, 200).c_str(),
                   res.status);
  });
}

}  // namespace bd
