// The server's counters, rendered in the Prometheus text exposition format (version 0.0.4) at
// GET /metrics. Written by the engine and the HTTP threads, so every field is atomic.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

namespace bd {

// A Prometheus histogram with fixed upper bounds (seconds or counts).
class Histogram {
 public:
  static constexpr std::array<double, 12> kSecondsBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                            0.1,   0.25,   0.5,   1,    2.5,   10};
  static constexpr std::array<double, 12> kCountBounds = {1,  2,  4,  8,   16,  32,
                                                          48, 64, 96, 128, 256, 512};
  explicit Histogram(const std::array<double, 12>& bounds) : bounds_(bounds) {}
  void observe(double value);
  // Appends the _bucket, _sum and _count lines of `name`.
  void render(std::string& out, const std::string& name, const std::string& help) const;
  int64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  const std::array<double, 12>& bounds_;
  std::array<std::atomic<int64_t>, 13> buckets_{};  // the last one: +Inf
  std::atomic<int64_t> count_{0};
  std::atomic<double> sum_{0};
};

struct Metrics {
  std::atomic<int64_t> requests{0};           // HTTP requests answered
  std::atomic<int64_t> request_errors{0};     // of them, answered with a 4xx or 5xx status
  std::atomic<int64_t> prompt_tokens{0};      // tokens in
  std::atomic<int64_t> completion_tokens{0};  // tokens out
  std::atomic<int64_t> preemptions{0};
  std::atomic<int64_t> cancelled{0};  // requests dropped unfinished (client left, internal error)
  std::atomic<int64_t> running{0}, waiting{0};
  std::atomic<int64_t> kv_blocks_used{0}, kv_blocks_total{0};
  Histogram batch_size{Histogram::kCountBounds};      // sequences per step
  Histogram step_adapters{Histogram::kCountBounds};   // distinct adapters per step (base: one)
  Histogram step_seconds{Histogram::kSecondsBounds};  // one forward step
  Histogram time_to_first_token{Histogram::kSecondsBounds};
  Histogram request_seconds{Histogram::kSecondsBounds};

  // Renders everything; `adapter_lines` appends the adapter cache's own lines.
  std::string render(const std::function<void(std::string&)>& adapter_lines) const;
};

}  // namespace bd
