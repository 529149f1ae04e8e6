// The serving engine: one loop that runs forward steps over a changing batch of sequences
// (continuous batching), each sequence with its own adapter, all in one paged KV cache.
//
//   HTTP threads ── submit() ──▶ inbox ──▶ waiting ──(adapter ready, KV blocks free)──▶ running
//        ▲                                    ▲                                          │
//        └──── Generation (text, usage) ◀─────┴──── preempted (blocks freed, recomputed) ◀┘
//
// Every step: admit waiting sequences whose adapter is loaded while the batch and the KV cache
// have room; give each running sequence its next chunk (prompt tokens while prefilling, one
// token when decoding), taking KV blocks as it grows and preempting the newest sequence when
// none are left; order the batch by adapter (one segment each); run forward_step; sample, detect
// stop strings, end of sequence and max_tokens; hand the new text to the request's Generation.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model/tokenizer.h"
#include "serve/adapter_cache.h"
#include "serve/metrics.h"

namespace bd {

// A request the server refuses, with the HTTP status to answer (400, 404, 503, ...).
struct RequestError : Error {
  RequestError(int status_, const std::string& message) : Error(message), status(status_) {}
  int status;
};

struct EngineOptions {
  int64_t max_batch = 64;          // sequences in one step
  int64_t kv_blocks = 2048;        // KV cache blocks of kKVBlockSize positions
  int64_t max_step_tokens = 512;   // prompt tokens per step (longer prompts prefill in chunks)
  int64_t max_tokens_limit = 512;  // largest max_tokens a request may ask for, and its default
};

struct GenerationRequest {
  std::string model;              // adapter name, or kBaseModelName
  std::vector<int32_t> prompt;    // token ids (with BOS as the tokenizer adds it)
  int64_t max_tokens = 0;         // 1 .. max_tokens_limit
  std::vector<std::string> stop;  // generation ends before the first of these in the text
  SamplerOptions sampling;        // temperature 0: greedy
};

// What a request produced so far, shared by the engine (writer) and its HTTP thread (reader).
class Generation {
 public:
  struct Update {
    std::string text;  // new text since the last update (whole UTF-8 characters)
    bool finished = false;
    std::string finish_reason;  // "stop" | "length" (when finished without error)
    std::string error;          // non-empty: the request failed
    int error_status = 0;       // HTTP status for the error
    int64_t prompt_tokens = 0, completion_tokens = 0;
  };
  // Blocks until there is new text or the generation finished (or `timeout` passed: an empty,
  // unfinished update).
  Update next(std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));
  // The client is gone or the server stops: the engine drops the sequence at its next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

  // Engine side.
  void append(const std::string& text, int64_t completion_tokens);
  void finish(const std::string& reason, int64_t prompt_tokens, int64_t completion_tokens);
  void fail(const std::string& error, int status);

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string pending_;
  Update final_;
  bool finished_ = false;
  int64_t completion_tokens_ = 0;
  std::atomic<bool> cancelled_{false};
};

class Engine {
 public:
  Engine(const LlamaWeights& weights, const Tokenizer& tokenizer, AdapterCache& adapters,
         Metrics& metrics, EngineOptions options);
  ~Engine();  // stop()

  // Thread-safe. Validates (max_tokens range, prompt within the context and the KV cache,
  // sampling options) and queues the request; throws bd::Error for an invalid one.
  std::shared_ptr<Generation> submit(GenerationRequest request);
  // Starts the step loop on its own thread.
  void start();
  // Cancels every request still waiting or running (they finish with an error) and joins the
  // loop.
  void stop();

  const EngineOptions& options() const { return options_; }
  int64_t eos_id() const { return eos_id_; }

 private:
  struct Sequence;
  void loop();
  void take_inbox();
  void drop_cancelled();
  void admit();
  bool grow(Sequence& sequence, int64_t positions);  // KV blocks, preempting others
  void preempt(Sequence& victim);
  void step();
  void after_step(Sequence& sequence, const float* logits);
  void finish(Sequence& sequence, const std::string& reason);
  void fail_all(const std::string& error, int status);

  const LlamaWeights& weights_;
  const Tokenizer& tokenizer_;
  AdapterCache& adapters_;
  Metrics& metrics_;
  const EngineOptions options_;
  int64_t eos_id_ = -1;

  KVBlockPool pool_;
  StepScratch scratch_;
  std::vector<std::unique_ptr<Sequence>> running_;  // in admission order
  std::deque<std::unique_ptr<Sequence>> waiting_;   // preempted ones first

  std::mutex inbox_mutex_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  bool stopping_ = false;
  bool woken_ = false;
  std::thread thread_;
};

}  // namespace bd
