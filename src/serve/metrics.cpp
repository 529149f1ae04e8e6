#include "serve/metrics.h"

#include <cstdio>

namespace bd {

namespace {

std::string number(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.15g", value);
  return buffer;
}

void header(std::string& out, const std::string& name, const char* type, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void counter(std::string& out, const std::string& name, const std::string& help, int64_t value) {
  header(out, name, "counter", help);
  out += name + " " + std::to_string(value) + "\n";
}

void gauge(std::string& out, const std::string& name, const std::string& help, int64_t value) {
  header(out, name, "gauge", help);
  out += name + " " + std::to_string(value) + "\n";
}

}  // namespace

void Histogram::observe(double value) {
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + value, std::memory_order_relaxed)) {
  }
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  header(out, name, "histogram", help);
  int64_t cumulative = 0;
  for (size_t b = 0; b <= bounds_.size(); ++b) {
    cumulative += buckets_[b].load(std::memory_order_relaxed);
    const std::string le = b < bounds_.size() ? number(bounds_[b]) : "+Inf";
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum " + number(sum_.load(std::memory_order_relaxed)) + "\n";
  out += name + "_count " + std::to_string(count_.load(std::memory_order_relaxed)) + "\n";
}

std::string Metrics::render(const std::function<void(std::string&)>& adapter_lines) const {
  std::string out;
  counter(out, "bitdelta_requests_total", "HTTP requests answered.", requests);
  counter(out, "bitdelta_request_errors_total", "HTTP requests answered with a 4xx or 5xx status.",
          request_errors);
  counter(out, "bitdelta_prompt_tokens_total", "Prompt tokens of finished requests.",
          prompt_tokens);
  counter(out, "bitdelta_completion_tokens_total", "Tokens generated.", completion_tokens);
  counter(out, "bitdelta_preemptions_total",
          "Sequences preempted (KV blocks freed, recomputed later).", preemptions);
  counter(out, "bitdelta_cancelled_total",
          "Requests dropped before they finished (their client left, or an internal error).",
          cancelled);
  gauge(out, "bitdelta_running_sequences", "Sequences in the running batch.", running);
  gauge(out, "bitdelta_waiting_sequences", "Sequences waiting for admission.", waiting);
  gauge(out, "bitdelta_kv_blocks_used", "KV cache blocks held by sequences.", kv_blocks_used);
  gauge(out, "bitdelta_kv_blocks_total", "KV cache blocks.", kv_blocks_total);
  batch_size.render(out, "bitdelta_batch_size", "Sequences per forward step.");
  step_adapters.render(out, "bitdelta_step_adapters",
                       "Distinct adapters per forward step (the base alone counts as one); each "
                       "streams its own signs.");
  step_seconds.render(out, "bitdelta_step_seconds", "Duration of one forward step.");
  time_to_first_token.render(out, "bitdelta_time_to_first_token_seconds",
                             "From submission to the first generated token.");
  request_seconds.render(out, "bitdelta_request_seconds", "From submission to the last token.");
  if (adapter_lines) adapter_lines(out);
  return out;
}

}  // namespace bd
