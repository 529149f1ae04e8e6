#include "serve/engine.h"

#include <algorithm>

#include "core/error.h"

namespace bd {

using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kMaxStopStrings = 4, kMaxStopBytes = 256;  // OpenAI's limits
constexpr auto kDrainTime = std::chrono::seconds(5);        // stop(): running requests may finish

// Bytes at the end of `text` that start a UTF-8 character not complete yet (0 to 3).
size_t incomplete_utf8_tail(const std::string& text) {
  for (size_t back = 1; back <= std::min<size_t>(3, text.size()); ++back) {
    const unsigned char c = static_cast<unsigned char>(text[text.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return length > back ? back : 0;
  }
  return 0;
}

// Length of the longest suffix of `text` that is a proper prefix of one of `stops` (text that
// may still become a stop string, so it is not sent yet).
size_t stop_prefix_tail(const std::string& text, const std::vector<std::string>& stops) {
  size_t longest = 0;
  for (const std::string& stop : stops)
    for (size_t length = std::min(stop.size() - 1, text.size()); length > longest; --length)
      if (text.compare(text.size() - length, length, stop, 0, length) == 0) {
        longest = length;
        break;
      }
  return longest;
}

}  // namespace

// ---- Generation ----

Generation::Update Generation::next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return finished_ || !pending_.empty(); });
  Update update;
  update.text = std::move(pending_);
  pending_.clear();
  update.completion_tokens = completion_tokens_;
  if (finished_) {
    const std::string text = std::move(update.text);
    update = final_;
    update.text = text;
  }
  return update;
}

void Generation::append(const std::string& text, int64_t completion_tokens) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_ += text;
    completion_tokens_ = completion_tokens;
  }
  changed_.notify_all();
}

void Generation::finish(const std::string& reason, int64_t prompt_tokens,
                        int64_t completion_tokens) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    final_.finished = true;
    final_.finish_reason = reason;
    final_.prompt_tokens = prompt_tokens;
    final_.completion_tokens = completion_tokens;
    completion_tokens_ = completion_tokens;
    finished_ = true;
  }
  changed_.notify_all();
}

void Generation::fail(const std::string& error, int status) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    final_.finished = true;
    final_.error = error;
    final_.error_status = status;
    finished_ = true;
  }
  changed_.notify_all();
}

// ---- Engine ----

struct Engine::Sequence {
  std::shared_ptr<Generation> out;
  GenerationRequest request;
  std::shared_ptr<const ServedAdapter> adapter;  // held while the sequence lives
  bool adapter_ready = false;
  std::vector<int32_t> tokens;  // prompt, then every generated token: what the KV cache holds
  int64_t prompt_tokens = 0;
  std::vector<int32_t> generated;  // without the end-of-sequence token
  std::string text;                // the generated tokens' text
  size_t sent = 0;                 // bytes of text handed to `out`
  KVSequence kv;
  Sampler sampler;
  int64_t step_tokens = 0;  // tokens this step feeds
  std::vector<float> logits;
  Clock::time_point submitted;
  bool first_token = true;

  Sequence(GenerationRequest r, int64_t vocab)
      : out(std::make_shared<Generation>()),
        request(std::move(r)),
        tokens(request.prompt),
        prompt_tokens(int64_t(request.prompt.size())),
        sampler(request.sampling),
        logits(static_cast<size_t>(vocab)),
        submitted(Clock::now()) {}
  const LlamaDelta* delta() const { return adapter ? &adapter->delta : nullptr; }
};

Engine::Engine(const LlamaWeights& weights, const Tokenizer& tokenizer, AdapterCache& adapters,
               Metrics& metrics, EngineOptions options)
    : weights_(weights),
      tokenizer_(tokenizer),
      adapters_(adapters),
      metrics_(metrics),
      options_(options),
      pool_(weights.config, options.kv_blocks) {
  if (options_.max_batch < 1 || options_.max_step_tokens < 1 || options_.max_tokens_limit < 1)
    fail("engine: max_batch, max_step_tokens and max_tokens_limit must be positive");
  eos_id_ = weights.config.eos_token_id >= 0 ? weights.config.eos_token_id : tokenizer.eos_id();
  metrics_.kv_blocks_total = pool_.blocks();
  adapters_.set_on_loaded([this] {
    {
      std::lock_guard<std::mutex> lock(inbox_mutex_);
      woken_ = true;
    }
    wake_.notify_all();
  });
}

Engine::~Engine() {
  adapters_.set_on_loaded(nullptr);
  stop();
}

std::shared_ptr<Generation> Engine::submit(GenerationRequest request) {
  const LlamaConfig& c = weights_.config;
  const int64_t prompt = int64_t(request.prompt.size());
  if (request.model != kBaseModelName && !adapters_.exists(request.model))
    throw RequestError(404, cat("the model '", request.model, "' does not exist"));
  if (prompt == 0) throw RequestError(400, "the prompt is empty");
  for (int32_t id : request.prompt)
    if (id < 0 || id >= c.vocab_size)
      throw RequestError(400,
                         cat("prompt token ", id, " is outside the vocabulary of ", c.vocab_size));
  if (prompt + 1 > c.max_position_embeddings)
    throw RequestError(400, cat("the prompt has ", prompt, " tokens; the model's context is ",
                                c.max_position_embeddings, " tokens, including the completion"));
  if (pool_.blocks_for(prompt + 1) > pool_.blocks())
    throw RequestError(400, cat("the prompt needs ", pool_.blocks_for(prompt + 1),
                                " KV cache blocks; the server has ", pool_.blocks()));
  if (request.max_tokens < 1 || request.max_tokens > options_.max_tokens_limit)
    throw RequestError(400, cat("max_tokens must be in [1, ", options_.max_tokens_limit, "], got ",
                                request.max_tokens));
  if (request.stop.size() > kMaxStopStrings)
    throw RequestError(
        400, cat("at most ", kMaxStopStrings, " stop strings, got ", request.stop.size()));
  for (const std::string& stop : request.stop)
    if (stop.empty() || stop.size() > kMaxStopBytes)
      throw RequestError(400, cat("a stop string must have 1 to ", kMaxStopBytes, " bytes"));
  try {
    Sampler check(request.sampling);
  } catch (const Error& e) {
    throw RequestError(400, e.what());
  }
  auto sequence = std::make_unique<Sequence>(std::move(request), c.vocab_size);
  std::shared_ptr<Generation> out = sequence->out;
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    if (stopping_) throw RequestError(503, "the server is shutting down");
    inbox_.push_back(std::move(sequence));
  }
  wake_.notify_all();
  return out;
}

void Engine::start() {
  thread_ = std::thread([this] { loop(); });
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Engine::loop() {
  Clock::time_point drain_deadline{};
  while (true) {
    {
      std::unique_lock<std::mutex> lock(inbox_mutex_);
      // Idle (or only waiting for adapters): sleep until a request, a loaded adapter or stop.
      if (running_.empty() && inbox_.empty() && !stopping_ && !woken_)
        wake_.wait_for(lock, std::chrono::milliseconds(50));
      woken_ = false;
      if (stopping_ && drain_deadline == Clock::time_point{})
        drain_deadline = Clock::now() + kDrainTime;
    }
    take_inbox();
    drop_cancelled();
    if (drain_deadline != Clock::time_point{}) {
      // Shutting down: waiting requests are cancelled, running ones may finish for a while.
      for (auto& s : waiting_) s->out->fail("the server is shutting down", 503);
      waiting_.clear();
      if (running_.empty()) break;
      if (Clock::now() > drain_deadline) {
        fail_all("the server is shutting down", 503);
        break;
      }
    }
    admit();
    metrics_.running = int64_t(running_.size());
    metrics_.waiting = int64_t(waiting_.size());
    if (!running_.empty()) step();
    metrics_.kv_blocks_used = pool_.blocks() - pool_.free_blocks();
  }
  metrics_.running = 0;
  metrics_.waiting = 0;
}

void Engine::take_inbox() {
  std::lock_guard<std::mutex> lock(inbox_mutex_);
  for (auto& s : inbox_) waiting_.push_back(std::move(s));
  inbox_.clear();
}

void Engine::drop_cancelled() {
  for (size_t i = 0; i < running_.size();) {
    if (running_[i]->out->cancelled()) {
      running_[i]->out->fail("cancelled", 499);
      ++metrics_.cancelled;
      pool_.release(running_[i]->kv);
      running_.erase(running_.begin() + std::ptrdiff_t(i));
    } else {
      ++i;
    }
  }
  std::erase_if(waiting_, [this](const std::unique_ptr<Sequence>& s) {
    if (!s->out->cancelled()) return false;
    s->out->fail("cancelled", 499);
    ++metrics_.cancelled;
    return true;
  });
}

// Waiting sequences join in order once their adapter is loaded, while the batch has room and the
// free KV blocks cover their prompts (a sequence whose adapter is still loading is passed over,
// so one cold user never holds up the others). The first max_batch waiting sequences ask for
// their adapters even when the batch is full: a queued request's adapter loads while it waits,
// and its sequence takes the next free slot instead of leaving it empty for a load.
void Engine::admit() {
  int64_t free_blocks = pool_.free_blocks();
  bool room = true;
  int64_t looked_at = 0;
  for (auto it = waiting_.begin(); it != waiting_.end() && looked_at < options_.max_batch;
       ++looked_at) {
    Sequence& s = **it;
    if (!s.adapter_ready) {
      if (s.request.model == kBaseModelName) {
        s.adapter_ready = true;
      } else {
        AdapterCache::Lookup lookup = adapters_.get(s.request.model);
        if (lookup.state == AdapterCache::State::Loading) {
          ++it;
          continue;
        }
        if (lookup.state != AdapterCache::State::Ready) {
          const bool missing = lookup.state == AdapterCache::State::Missing;
          s.out->fail(missing
                          ? lookup.error
                          : cat("adapter '", s.request.model, "' cannot be loaded: ", lookup.error),
                      missing ? 404 : 500);
          it = waiting_.erase(it);
          continue;
        }
        s.adapter = std::move(lookup.adapter);
        s.adapter_ready = true;
      }
    }
    const int64_t needed = pool_.blocks_for(int64_t(s.tokens.size()) + 1);
    room = room && int64_t(running_.size()) < options_.max_batch && needed <= free_blocks;
    if (!room) {  // in order: nothing behind it joins either, but its adapter is asked for
      ++it;
      continue;
    }
    free_blocks -= needed;
    running_.push_back(std::move(*it));
    it = waiting_.erase(it);
  }
}

void Engine::preempt(Sequence& victim) {
  pool_.release(victim.kv);  // recomputed from its tokens when it is admitted again
  ++metrics_.preemptions;
  auto it = std::find_if(running_.begin(), running_.end(),
                         [&](const std::unique_ptr<Sequence>& s) { return s.get() == &victim; });
  waiting_.push_front(std::move(*it));
  running_.erase(it);
}

// Blocks for `positions` positions of `sequence`, preempting the newest other sequences when the
// pool runs out. False when even that is not enough (the sequence waits instead).
bool Engine::grow(Sequence& sequence, int64_t positions) {
  while (!pool_.reserve(sequence.kv, positions)) {
    Sequence* victim = nullptr;
    for (auto it = running_.rbegin(); it != running_.rend(); ++it)
      if (it->get() != &sequence && (*it)->kv.blocks.size() > 0) {
        victim = it->get();
        break;
      }
    if (!victim) return false;
    preempt(*victim);
  }
  return true;
}

void Engine::step() {
  // Each sequence's chunk, oldest first (so preemption takes the newest).
  int64_t prefill_budget = options_.max_step_tokens;
  std::vector<Sequence*> batch;
  for (size_t i = 0; i < running_.size();) {
    Sequence& s = *running_[i];
    const int64_t pending = int64_t(s.tokens.size()) - s.kv.pos;
    s.step_tokens = pending == 1 ? 1 : std::min(pending, prefill_budget);
    if (s.step_tokens == 0) {
      ++i;
      continue;
    }
    if (!grow(s, s.kv.pos + s.step_tokens)) {
      preempt(s);  // nothing left to take from: wait for blocks
      continue;
    }
    if (pending > 1) prefill_budget -= s.step_tokens;
    batch.push_back(&s);
    ++i;
  }
  // Preemption may have removed sequences already in the batch.
  std::erase_if(batch, [&](Sequence* s) {
    return std::none_of(running_.begin(), running_.end(),
                        [&](const std::unique_ptr<Sequence>& r) { return r.get() == s; });
  });
  if (batch.empty()) return;
  // One segment per adapter: sequences of one adapter next to each other.
  std::stable_sort(batch.begin(), batch.end(), [](const Sequence* a, const Sequence* b) {
    return std::less<const void*>()(a->delta(), b->delta());
  });
  std::vector<StepSequence> step;
  step.reserve(batch.size());
  for (Sequence* s : batch)
    step.push_back(StepSequence{.tokens = s->tokens.data() + s->kv.pos,
                                .n = s->step_tokens,
                                .kv = &s->kv,
                                .delta = s->delta(),
                                .logits = s->logits.data(),
                                .lookup_max_rows = generate_lookup_max_tokens()});
  const auto start = Clock::now();
  try {
    forward_step(weights_, pool_, step, scratch_);
  } catch (const std::exception& e) {  // checked before it changes anything: drop the step
    for (Sequence* s : batch) {
      s->out->fail(cat("internal error: ", e.what()), 500);
      s->out->cancel();
    }
    drop_cancelled();
    return;
  }
  metrics_.step_seconds.observe(std::chrono::duration<double>(Clock::now() - start).count());
  metrics_.batch_size.observe(double(batch.size()));
  int64_t adapters = 0;  // segments: the batch is sorted by adapter
  for (size_t i = 0; i < batch.size(); ++i)
    adapters += i == 0 || batch[i]->delta() != batch[i - 1]->delta();
  metrics_.step_adapters.observe(double(adapters));
  for (Sequence* s : batch)
    if (s->kv.pos == int64_t(s->tokens.size())) after_step(*s, s->logits.data());
  std::erase_if(running_, [](const std::unique_ptr<Sequence>& s) { return !s; });
}

void Engine::after_step(Sequence& s, const float* logits) {
  const int32_t token = s.sampler.sample(logits, weights_.config.vocab_size);
  if (s.first_token) {
    s.first_token = false;
    metrics_.time_to_first_token.observe(
        std::chrono::duration<double>(Clock::now() - s.submitted).count());
  }
  if (token == eos_id_) return finish(s, "stop");
  s.generated.push_back(token);
  s.tokens.push_back(token);
  ++metrics_.completion_tokens;
  try {
    s.text = tokenizer_.decode(s.generated);
  } catch (const Error& e) {
    s.out->fail(cat("generated token ", token, " has no text: ", e.what()), 500);
    s.out->cancel();
    return;
  }
  // The earliest stop string ends the text before it.
  const size_t search_from =
      s.sent > kMaxStopBytes ? s.sent - kMaxStopBytes : 0;  // a stop may straddle sent text
  size_t stop_at = std::string::npos;
  for (const std::string& stop : s.request.stop)
    stop_at = std::min(stop_at, s.text.find(stop, search_from));
  if (stop_at != std::string::npos && stop_at >= s.sent) {
    s.text.resize(stop_at);
    return finish(s, "stop");
  }
  const bool out_of_tokens = int64_t(s.generated.size()) >= s.request.max_tokens ||
                             int64_t(s.tokens.size()) >= weights_.config.max_position_embeddings;
  if (out_of_tokens) return finish(s, "length");
  const size_t held =
      std::max(incomplete_utf8_tail(s.text), stop_prefix_tail(s.text, s.request.stop));
  if (s.text.size() - held > s.sent) {
    s.out->append(s.text.substr(s.sent, s.text.size() - held - s.sent),
                  int64_t(s.generated.size()));
    s.sent = s.text.size() - held;
  }
}

void Engine::finish(Sequence& s, const std::string& reason) {
  if (s.text.size() > s.sent) s.out->append(s.text.substr(s.sent), int64_t(s.generated.size()));
  s.sent = s.text.size();
  s.out->finish(reason, s.prompt_tokens, int64_t(s.generated.size()));
  metrics_.prompt_tokens += s.prompt_tokens;
  metrics_.request_seconds.observe(
      std::chrono::duration<double>(Clock::now() - s.submitted).count());
  pool_.release(s.kv);
  for (auto& r : running_)
    if (r.get() == &s) r.reset();  // removed from running_ at the end of the step
}

void Engine::fail_all(const std::string& error, int status) {
  for (auto& s : running_) {
    s->out->fail(error, status);
    pool_.release(s->kv);
  }
  running_.clear();
  for (auto& s : waiting_) s->out->fail(error, status);
  waiting_.clear();
}

}  // namespace bd
