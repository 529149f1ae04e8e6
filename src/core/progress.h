// Progress line for long jobs: rate and ETA, redrawn on stderr when it is a terminal.
// Silent when stderr is not a terminal or when quiet (--json).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace bd {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit, bool quiet);
  ~Progress();
  // Sets the count done so far; `extra` is shown after the counter (e.g. "loss 2.31").
  void update(int64_t done, const std::string& extra = "");
  void finish();  // ends the line

 private:
  std::string label_, unit_;
  int64_t total_;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_duration(double seconds);  // "1m05s"

}  // namespace bd
