// The cost of privacy: DP-SGD steps against non-private steps of the same (expected) batch on
// the embedded default model, all measured in one run.
//
//   build/dp_bench [--config FILE] [--batch B] [--seq T] [--steps N] [--runs R] [--threads N]
//                  [--freeze-embeddings]
//
// --config: a config.json (default: models/default-config.json, the embedded default model);
// B windows of T tokens per step (defaults 16 and 128); --freeze-embeddings as in `train` (the
// bundled-user fine-tunes' setting), else every tensor trains. Random init and random tokens
// (speed does not depend on the values). After 2 warm-up steps of each, R rounds (default 3) each
// time, back to back, N steps (default 5) of:
//   plain         Trainer::step: one forward, one backward, global-norm clipping, AdamW;
//   dp-ghost      Trainer::private_step on B windows: ghost norms + book-keeping
//                 (train/per_example_clip.h), Gaussian noise on every parameter, AdamW;
//   dp-opacus     the same with every example's gradient materialised (Opacus's grad_sample);
//   dp-poisson    dp-ghost on Poisson-sampled windows (q = B / windows): a variable batch in the
//                 same buffers; its time is per expected batch (total time ÷ steps).
// The DP steps use exactly B windows except dp-poisson, so that the ratios compare the same
// work. Reports each round, the medians over rounds of the per-round ratios to plain, and one
// JSON line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/threads.h"
#include "io/llama_config.h"
#include "model/llama_params.h"
#include "train/trainer.h"
#include "util/bench_util.h"

namespace bd {
namespace {

using bench::load_average;
using bench::median;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string config_path =
      (std::filesystem::path(__FILE__).parent_path().parent_path() / "models/default-config.json")
          .string();
  int64_t batch = 16;
  int64_t seq = 128;
  int64_t steps = 5;
  int runs = 3;
  int threads = 0;
  bool freeze_embeddings = false;
};

constexpr int64_t kWarmupSteps = 2;
constexpr int64_t kWindows = 2048;  // the training stream: this many disjoint windows

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(flag, " needs a value");
      return argv[++i];
    };
    if (flag == "--config")
      o.config_path = value();
    else if (flag == "--batch")
      o.batch = std::stoll(value());
    else if (flag == "--seq")
      o.seq = std::stoll(value());
    else if (flag == "--steps")
      o.steps = std::stoll(value());
    else if (flag == "--runs")
      o.runs = std::stoi(value());
    else if (flag == "--threads")
      o.threads = std::stoi(value());
    else if (flag == "--freeze-embeddings")
      o.freeze_embeddings = true;
    else
      fail("unknown option ", flag, " (see the comment at the top of bench/dp_bench.cpp)");
  }
  if (o.batch < 1 || o.seq < 1 || o.steps < 1 || o.runs < 1 || o.batch > kWindows)
    fail("--batch (at most ", kWindows, "), --seq, --steps, --runs must be >= 1");
  return o;
}

enum class Engine { plain, ghost, opacus, poisson };
const char* const kEngineNames[] = {"plain", "dp-ghost", "dp-opacus", "dp-poisson"};

// One engine's trainer on its own copy of the parameters and a shared random token stream.
class StepTimer {
 public:
  StepTimer(const LlamaConfig& config, const Options& o, Engine engine,
            const std::vector<int32_t>& tokens)
      : params_(config), o_(o), engine_(engine), tokens_(tokens), rng_(3) {
    params_.init_random(1);
    TrainOptions options;
    options.steps = 1'000'000;  // only sets the learning-rate schedule's length
    options.batch = o.batch;
    options.seq = o.seq;
    options.quiet = true;
    options.freeze_embeddings = o.freeze_embeddings;
    if (engine != Engine::plain)
      options.dp = DpOptions{.noise_multiplier = 1.0,
                             .max_grad_norm = 1.0,
                             .sample_rate = double(o.batch) / double(kWindows),
                             .method = engine == Engine::opacus ? PerExampleMethod::materialized
                                                                : PerExampleMethod::ghost,
                             .seed = std::nullopt};
    trainer_.emplace(params_, options);
  }

  // Seconds per step (median), or per expected batch for dp-poisson (total ÷ steps).
  double run(int64_t steps) {
    std::vector<double> seconds;
    for (int64_t step = 0; step < steps; ++step) {
      const std::vector<int64_t> windows =
          engine_ == Engine::poisson ? trainer_->sample_windows(kWindows) : distinct_windows();
      const auto start = Clock::now();
      if (engine_ == Engine::plain)
        trainer_->step(window_batch(tokens_, o_.seq, windows));
      else
        trainer_->private_step(tokens_, windows);
      seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    if (engine_ != Engine::poisson) return median(seconds);
    double total = 0;
    for (double s : seconds) total += s;
    return total / double(steps);
  }

 private:
  std::vector<int64_t> distinct_windows() {
    std::vector<int64_t> all(kWindows);
    for (int64_t i = 0; i < kWindows; ++i) all[size_t(i)] = i;
    std::shuffle(all.begin(), all.end(), rng_);
    all.resize(size_t(o_.batch));
    return all;
  }

  LlamaParams params_;
  const Options& o_;
  Engine engine_;
  const std::vector<int32_t>& tokens_;
  std::mt19937_64 rng_;
  std::optional<Trainer> trainer_;
};

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  set_threads(o.threads);
  const std::string load_before = load_average();
  const LlamaConfig config = parse_llama_config(read_file(o.config_path), o.config_path);
  if (o.seq > config.max_position_embeddings)
    fail("--seq ", o.seq, " exceeds max_position_embeddings ", config.max_position_embeddings);
  std::vector<int32_t> tokens(size_t(kWindows * (o.seq + 1)));
  std::mt19937_64 rng(2);
  for (int32_t& token : tokens) token = int32_t(rng() % uint64_t(config.vocab_size));

  std::vector<StepTimer> timers;
  timers.reserve(4);
  for (Engine engine : {Engine::plain, Engine::ghost, Engine::opacus, Engine::poisson})
    timers.emplace_back(config, o, engine, tokens);
  for (StepTimer& timer : timers) timer.run(kWarmupSteps);

  const double tokens_per_step = double(o.batch * o.seq);
  std::vector<std::vector<double>> speed(4), ratio(4);
  std::printf("threads %d, %.2fM parameters, B=%lld T=%lld, %lld steps per engine and round\n",
              num_threads(), double(LlamaParams(config).size()) / 1e6, (long long)o.batch,
              (long long)o.seq, (long long)o.steps);
  std::printf(
      "round  plain tok/s  dp-ghost tok/s (x plain)  dp-opacus tok/s (x plain)  "
      "dp-poisson tok/s (x plain)\n");
  for (int r = 0; r < o.runs; ++r) {
    std::cerr << "round " << r + 1 << " of " << o.runs << " ...\n";
    std::vector<double> seconds;
    for (StepTimer& timer : timers) seconds.push_back(timer.run(o.steps));
    std::printf("%5d", r + 1);
    for (size_t e = 0; e < timers.size(); ++e) {
      speed[e].push_back(tokens_per_step / seconds[e]);
      ratio[e].push_back(seconds[e] / seconds[0]);
      std::printf(e == 0 ? "  %11.0f" : "  %14.0f (%5.2fx)", tokens_per_step / seconds[e],
                  seconds[e] / seconds[0]);
    }
    std::printf("\n");
  }
  nlohmann::json json = {{"threads", num_threads()},
                         {"batch", o.batch},
                         {"seq", o.seq},
                         {"steps", o.steps},
                         {"rounds", o.runs},
                         {"load_average_before", load_before},
                         {"load_average_after", load_average()}};
  std::printf("median:");
  for (size_t e = 0; e < timers.size(); ++e) {
    json[kEngineNames[e]] = {{"tokens_per_s", median(speed[e])},
                             {"step_time_over_plain", median(ratio[e])}};
    std::printf(" %s %.0f tok/s (%.2fx)%s", kEngineNames[e], median(speed[e]), median(ratio[e]),
                e + 1 < timers.size() ? "," : "\n");
  }
  std::printf("load average before %s, after %s\n", load_before.c_str(), load_average().c_str());
  std::printf("%s\n", json.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace bd

int main(int argc, char** argv) {
  return bd::bench::guarded_main("dp_bench", bd::run, argc, argv);
}
