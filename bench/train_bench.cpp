// Training speed of the embedded default model: tokens/s of full optimizer steps (forward,
// backward, clipping, AdamW), against 6 × parameters FLOPs per token at the measured F32 SGEMM
// rate, and against the same model in PyTorch, all measured in one run.
//
//   build/train_bench [--config FILE] [--batch B] [--seq T] [--steps N] [--runs R]
//                     [--threads N] [--no-torch] [--torch-script PATH]
//
// --config: a config.json (default: models/default-config.json, the embedded default model);
// B and T default to 16 and 256, as scripts/train_default.sh trains it. Steps train on random
// tokens. After 2 warm-up steps, R rounds (default 3) each measure, back to back: the SGEMM rate
// (best of cblas_sgemm on 1024² and 2048² squares), N steps of bitdelta (default 5; tokens/s =
// B·T ÷ median step time), and bench/torch_train.py (same config, B, T, N and threads; float32,
// eager; its own 2 warm-up steps). Reports each round and the medians over rounds of the speeds
// and of the per-round ratios, then one JSON line with every number.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>
#include "core/atomic_file.h"
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
  // The embedded default model's config, next to this source file wherever the build runs.
  std::string config_path =
      (std::filesystem::path(__FILE__).parent_path().parent_path() / "models/default-config.json")
          .string();
  int64_t batch = 16;  // as scripts/train_default.sh trains it
  int64_t seq = 256;
  int64_t steps = 5;  // timed steps per engine and round
  int runs = 3;       // rounds
  int threads = 0;    // 0: all cores
  bool torch = true;
  // Next to this source file, wherever the build runs from.
  std::string torch_script =
      (std::filesystem::path(__FILE__).parent_path() / "torch_train.py").string();
};

constexpr int64_t kWarmupSteps = 2;

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
    else if (flag == "--no-torch")
      o.torch = false;
    else if (flag == "--torch-script")
      o.torch_script = value();
    else
      fail("unknown option ", flag, " (see the comment at the top of bench/train_bench.cpp)");
  }
  if (o.batch < 1 || o.seq < 1 || o.steps < 1 || o.runs < 1)
    fail("--batch, --seq, --steps, --runs must be >= 1");
  return o;
}

// Best F32 SGEMM rate (FLOP/s) over square products C = A·B of a few sizes.
double sgemm_rate() {
  double best = 0;
  for (int n : {1024, 2048}) {
    std::vector<float> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    for (float& v : a) v = uniform(rng);
    for (float& v : b) v = uniform(rng);
    for (int rep = 0; rep < 4; ++rep) {  // the first one warms up
      const auto start = Clock::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(),
                  n, 0.0f, c.data(), n);
      const std::chrono::duration<double> seconds = Clock::now() - start;
      if (rep > 0) best = std::max(best, 2.0 * n * n * double(n) / seconds.count());
    }
  }
  return best;
}

Batch random_batch(int64_t B, int64_t T, int64_t vocab, std::mt19937_64& rng) {
  Batch batch{B, T, std::vector<int32_t>(size_t(B * T)), std::vector<int32_t>(size_t(B * T))};
  std::uniform_int_distribution<int32_t> token(0, int32_t(vocab - 1));
  for (int32_t& t : batch.inputs) t = token(rng);
  for (int32_t& t : batch.targets) t = token(rng);
  return batch;
}

// bitdelta's Trainer on random batches; run() times `steps` optimizer steps.
class StepTimer {
 public:
  StepTimer(const LlamaConfig& config, const Options& o) : params_(config), o_(o), rng_(2) {
    params_.init_random(1);
    TrainOptions options;
    options.steps = 1'000'000;  // only sets the learning-rate schedule's length
    options.batch = o.batch;
    options.seq = o.seq;
    options.quiet = true;
    trainer_.emplace(params_, options);
  }

  // tokens/s = B·T ÷ median step time.
  double run(int64_t steps) {
    std::vector<double> seconds;
    for (int64_t step = 0; step < steps; ++step) {
      const Batch batch = random_batch(o_.batch, o_.seq, params_.config().vocab_size, rng_);
      const auto start = Clock::now();
      trainer_->step(batch);
      seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    return double(o_.batch * o_.seq) / median(seconds);
  }

 private:
  LlamaParams params_;
  const Options& o_;
  std::mt19937_64 rng_;
  std::optional<Trainer> trainer_;
};

nlohmann::json run_torch(const Options& o, int threads, const std::string& config_path) {
  const std::string command = cat("/usr/bin/python3 '", o.torch_script, "' --config '", config_path,
                                  "' --threads ", threads, " --batch ", o.batch, " --seq ", o.seq,
                                  " --steps ", o.steps, " --warmup ", kWarmupSteps);
  return bench::run_json_command(command, "torch_train.py");
}

// One round: SGEMM rate, bitdelta, PyTorch, back to back, so that the ratios compare numbers
// taken under the same conditions (the machine may be shared).
struct Round {
  double rate = 0;   // FLOP/s
  double ours = 0;   // tokens/s
  double torch = 0;  // tokens/s; 0 with --no-torch
};

int report(const Options& o, int threads, const LlamaConfig& config, int64_t params,
           const std::vector<Round>& rounds, const std::string& load_before) {
  const double flops_per_token = 6.0 * double(params);
  std::vector<double> rate, ours, torch, ours_of_bound, torch_of_bound, ours_over_torch;
  std::printf(
      "threads %d, %.2fM parameters, B=%lld T=%lld, %lld timed steps per engine and round\n",
      threads, double(params) / 1e6, (long long)o.batch, (long long)o.seq, (long long)o.steps);
  std::printf(
      "round  SGEMM GFLOP/s  6N bound tok/s  bitdelta tok/s (of bound)  torch tok/s (of bound)\n");
  for (size_t r = 0; r < rounds.size(); ++r) {
    const Round& round = rounds[r];
    const double bound = round.rate / flops_per_token;
    rate.push_back(round.rate / 1e9);
    ours.push_back(round.ours);
    ours_of_bound.push_back(round.ours / bound);
    std::printf("%5zu  %13.1f  %14.0f  %14.0f (%5.1f%%)", r + 1, round.rate / 1e9, bound,
                round.ours, 100 * round.ours / bound);
    if (round.torch > 0) {
      torch.push_back(round.torch);
      torch_of_bound.push_back(round.torch / bound);
      ours_over_torch.push_back(round.ours / round.torch);
      std::printf("  %11.0f (%5.1f%%)", round.torch, 100 * round.torch / bound);
    }
    std::printf("\n");
  }
  nlohmann::json json = {
      {"threads", threads},
      {"params", params},
      {"batch", o.batch},
      {"seq", o.seq},
      {"steps", o.steps},
      {"rounds", o.runs},
      {"config", nlohmann::json::parse(llama_config_json(config))},
      {"load_average_before", load_before},
      {"load_average_after", load_average()},
      {"sgemm_GFLOPs", median(rate)},
      {"six_n_tokens_per_s", median(rate) * 1e9 / flops_per_token},
      {"bitdelta", {{"tokens_per_s", median(ours)}, {"of_six_n", median(ours_of_bound)}}},
  };
  std::printf(
      "median: SGEMM %.1f GFLOP/s, 6N bound %.0f tokens/s; bitdelta %.0f tokens/s = %.1f%% "
      "of the bound\n",
      median(rate), median(rate) * 1e9 / flops_per_token, median(ours),
      100 * median(ours_of_bound));
  if (!torch.empty()) {
    json["torch"] = {{"tokens_per_s", median(torch)}, {"of_six_n", median(torch_of_bound)}};
    json["bitdelta_over_torch"] = median(ours_over_torch);
    std::printf("median: torch %.0f tokens/s = %.1f%% of the bound; bitdelta / torch = %.2f\n",
                median(torch), 100 * median(torch_of_bound), median(ours_over_torch));
  }
  std::printf("load average before %s, after %s\n", load_before.c_str(), load_average().c_str());
  std::printf("%s\n", json.dump().c_str());
  return 0;
}

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  set_threads(o.threads);
  const int threads = num_threads();
  const std::string load_before = load_average();
  const LlamaConfig config = parse_llama_config(read_file(o.config_path), o.config_path);
  if (o.seq > config.max_position_embeddings)
    fail("--seq ", o.seq, " exceeds max_position_embeddings ", config.max_position_embeddings);
  // The PyTorch twin reads the config as bitdelta parsed it.
  const std::filesystem::path config_file =
      std::filesystem::temp_directory_path() / cat("bitdelta-train-bench-", getpid(), ".json");
  write_file_atomic(config_file.string(), llama_config_json(config), /*overwrite=*/true);

  StepTimer timer(config, o);
  timer.run(kWarmupSteps);
  std::vector<Round> rounds;
  for (int r = 0; r < o.runs; ++r) {
    std::cerr << "round " << r + 1 << " of " << o.runs << " ...\n";
    Round round;
    round.rate = sgemm_rate();
    round.ours = timer.run(o.steps);
    if (o.torch) round.torch = run_torch(o, threads, config_file.string()).at("tokens_per_s");
    rounds.push_back(round);
  }
  std::filesystem::remove(config_file);
  return report(o, threads, config, int64_t(LlamaParams(config).size()), rounds, load_before);
}

}  // namespace
}  // namespace bd

int main(int argc, char** argv) {
  return bd::bench::guarded_main("train_bench", bd::run, argc, argv);
}
