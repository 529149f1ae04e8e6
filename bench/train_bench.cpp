// Training speed of a small (default-model-sized) Llama: tokens/s of full optimizer steps
// (forward, backward, clipping, AdamW), against 6 × parameters FLOPs per token at the measured
// F32 SGEMM rate, and against the same model in PyTorch, all measured in one run.
//
//   build-perf/train_bench [--config FILE] [--batch B] [--seq T] [--steps N] [--threads N]
//                          [--no-torch] [--torch-script PATH]
//
// --config: a config.json (default: models/default-config.json, the embedded default model);
// B and T default to 16 and 256, as scripts/train_default.sh trains it.
// Steps train on random tokens; 2 warm-up steps, then N timed ones; tokens/s = B·T ÷ median
// step time. The SGEMM rate is the best of cblas_sgemm on 1024² and 2048² squares.
// bench/torch_train.py gets the same config, B, T, N and threads (float32, eager).
// Prints a table, then one JSON line with every number.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
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

namespace bd {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  // The embedded default model's config, next to this source file wherever the build runs.
  std::string config_path =
      (std::filesystem::path(__FILE__).parent_path().parent_path() / "models/default-config.json")
          .string();
  int64_t batch = 16;  // as scripts/train_default.sh trains it
  int64_t seq = 256;
  int64_t steps = 10;
  int threads = 0;  // 0: all cores
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
    else if (flag == "--threads")
      o.threads = std::stoi(value());
    else if (flag == "--no-torch")
      o.torch = false;
    else if (flag == "--torch-script")
      o.torch_script = value();
    else
      fail("unknown option ", flag, " (see the comment at the top of bench/train_bench.cpp)");
  }
  if (o.batch < 1 || o.seq < 1 || o.steps < 1) fail("--batch, --seq, --steps must be >= 1");
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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

Batch random_batch(int64_t B, int64_t T, int64_t vocab, std::mt19937_64& rng) {
  Batch batch{B, T, std::vector<int32_t>(size_t(B * T)), std::vector<int32_t>(size_t(B * T))};
  std::uniform_int_distribution<int32_t> token(0, int32_t(vocab - 1));
  for (int32_t& t : batch.inputs) t = token(rng);
  for (int32_t& t : batch.targets) t = token(rng);
  return batch;
}

// Seconds of each timed optimizer step (after kWarmupSteps untimed ones).
std::vector<double> time_steps(const LlamaConfig& config, const Options& o) {
  LlamaParams params(config);
  params.init_random(1);
  TrainOptions options;
  options.steps = kWarmupSteps + o.steps;
  options.batch = o.batch;
  options.seq = o.seq;
  options.quiet = true;
  Trainer trainer(params, options);
  std::mt19937_64 rng(2);
  std::vector<double> seconds;
  for (int64_t step = 0; step < kWarmupSteps + o.steps; ++step) {
    const Batch batch = random_batch(o.batch, o.seq, config.vocab_size, rng);
    const auto start = Clock::now();
    trainer.step(batch);
    const std::chrono::duration<double> dt = Clock::now() - start;
    if (step >= kWarmupSteps) seconds.push_back(dt.count());
  }
  return seconds;
}

nlohmann::json run_torch(const Options& o, int threads, const std::string& config_path) {
  const std::string command = cat("/usr/bin/python3 '", o.torch_script, "' --config '", config_path,
                                  "' --threads ", threads, " --batch ", o.batch, " --seq ", o.seq,
                                  " --steps ", o.steps, " --warmup ", kWarmupSteps);
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) fail("cannot run ", command);
  std::string output;
  char buffer[4096];
  while (size_t got = fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, got);
  if (pclose(pipe) != 0) fail("torch_train.py failed: ", command);
  return nlohmann::json::parse(output);
}

int64_t parameter_count(const LlamaConfig& config) {
  return int64_t(LlamaParams(config).size());
}

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  set_threads(o.threads);
  const int threads = num_threads();
  const LlamaConfig config = parse_llama_config(read_file(o.config_path), o.config_path);
  if (o.seq > config.max_position_embeddings)
    fail("--seq ", o.seq, " exceeds max_position_embeddings ", config.max_position_embeddings);

  std::cerr << "measuring SGEMM rate ...\n";
  const double rate = sgemm_rate();
  const int64_t params = parameter_count(config);
  const double flops_per_token = 6.0 * double(params);
  const double ideal = rate / flops_per_token;
  std::cerr << "training with bitdelta ...\n";
  const double ours = double(o.batch * o.seq) / median(time_steps(config, o));

  nlohmann::json report = {
      {"threads", threads},
      {"params", params},
      {"batch", o.batch},
      {"seq", o.seq},
      {"steps", o.steps},
      {"config", nlohmann::json::parse(llama_config_json(config))},
      {"sgemm_GFLOPs", rate / 1e9},
      {"six_n_tokens_per_s", ideal},
      {"bitdelta", {{"tokens_per_s", ours}, {"of_six_n", ours / ideal}}},
  };
  std::printf("threads %d, %.2fM parameters, B=%lld T=%lld\n", threads, double(params) / 1e6,
              (long long)o.batch, (long long)o.seq);
  std::printf("SGEMM %.1f GFLOP/s -> 6N bound %.0f tokens/s\n", rate / 1e9, ideal);
  std::printf("bitdelta %8.0f tokens/s  %5.1f%% of the 6N bound\n", ours, 100 * ours / ideal);

  if (o.torch) {
    std::cerr << "training with PyTorch ...\n";
    const std::filesystem::path config_file =
        std::filesystem::temp_directory_path() / cat("bitdelta-train-bench-", getpid(), ".json");
    write_file_atomic(config_file.string(), llama_config_json(config), /*overwrite=*/true);
    nlohmann::json torch = run_torch(o, threads, config_file.string());
    std::filesystem::remove(config_file);
    const double torch_tps = torch.at("tokens_per_s").get<double>();
    torch["of_six_n"] = torch_tps / ideal;
    report["torch"] = torch;
    report["bitdelta_over_torch"] = ours / torch_tps;
    std::printf("torch    %8.0f tokens/s  %5.1f%% of the 6N bound  (torch %s)\n", torch_tps,
                100 * torch_tps / ideal, torch.at("version").get<std::string>().c_str());
    std::printf("bitdelta / torch = %.2f\n", ours / torch_tps);
  }
  std::printf("%s\n", report.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace bd

int main(int argc, char** argv) {
  try {
    return bd::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_bench: %s\n", e.what());
    return 1;
  }
}
