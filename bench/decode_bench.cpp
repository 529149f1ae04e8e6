// End-to-end decode speed of a 1.1B-parameter Llama (TinyLlama's shape) with random BF16
// weights, against the memory-bandwidth limit and against PyTorch, all measured in one run.
//
//   build/decode_bench [--threads N] [--dir DIR] [--prompt P] [--tokens N] [--runs R]
//                      [--no-torch] [--torch-script PATH]
//
// Writes the random checkpoint (HF folder, ~2.2 GB) into DIR once; later runs reuse it. After
// one warm-up decode, R rounds (default 5) each measure, back to back:
//   1. the read bandwidth B of main memory (all threads streaming a 1 GiB buffer, best of 3):
//      the limit is B ÷ (weight bytes read per token);
//   2. bitdelta: prefill P tokens, decode N tokens greedily; tokens/s = 1 / median token time;
//   3. PyTorch: bench/torch_decode.py on the same checkpoint with the same threads, P and N.
// Reports each round and the medians over rounds of the speeds and of the per-round ratios
// (robust when other jobs share the machine), then one JSON line with every number.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "io/checkpoint.h"
#include "kernels/membw.h"
#include "model/kv_cache.h"
#include "model/llama.h"
#include "util/bench_util.h"

namespace bd {
namespace {

using bench::hashed_uniform;
using bench::load_average;
using bench::median;

using Clock = std::chrono::steady_clock;

struct Options {
  int threads = 0;  // 0: all cores
  std::string dir =
      (std::filesystem::temp_directory_path() / "bitdelta-decode-bench-1.1b").string();
  int64_t prompt = 8;
  int64_t tokens = 32;
  int runs = 5;
  bool torch = true;
  // Next to this source file, wherever the build runs from.
  std::string torch_script =
      (std::filesystem::path(__FILE__).parent_path() / "torch_decode.py").string();
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(flag, " needs a value");
      return argv[++i];
    };
    if (flag == "--threads")
      o.threads = std::stoi(value());
    else if (flag == "--dir")
      o.dir = value();
    else if (flag == "--prompt")
      o.prompt = std::stoll(value());
    else if (flag == "--tokens")
      o.tokens = std::stoll(value());
    else if (flag == "--runs")
      o.runs = std::stoi(value());
    else if (flag == "--no-torch")
      o.torch = false;
    else if (flag == "--torch-script")
      o.torch_script = value();
    else
      fail("unknown option ", flag, " (see the comment at the top of bench/decode_bench.cpp)");
  }
  if (o.prompt < 1 || o.tokens < 1 || o.runs < 1) fail("--prompt, --tokens, --runs must be >= 1");
  return o;
}

int32_t argmax(const std::vector<float>& logits) {
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// The prompt: BOS-like id 1, then fixed pseudo-random ids (the same in torch_decode.py).
std::vector<int32_t> prompt_ids(int64_t n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = i == 0 ? 1 : int32_t((i * 7919) % vocab);
  return ids;
}

// One engine's decode: 1 / median seconds per decoded token.
struct Decoder {
  const LlamaWeights& weights;
  std::vector<int32_t> prompt;
  KVCache cache;
  std::vector<float> logits;
  std::vector<float> prompt_logits;  // after the prompt, for the cross-check with PyTorch

  Decoder(const LlamaWeights& w, const Options& o)
      : weights(w),
        prompt(prompt_ids(o.prompt, w.config.vocab_size)),
        cache(w.config, o.prompt + o.tokens),
        logits(size_t(w.config.vocab_size)) {}

  // Prefills the prompt, then decodes `tokens` tokens greedily; returns tokens/s.
  double run(int64_t tokens) {
    cache.reset();
    forward(weights, cache, prompt.data(), int64_t(prompt.size()), logits.data());
    prompt_logits = logits;
    int32_t token = argmax(logits);
    std::vector<double> seconds;
    for (int64_t i = 0; i < tokens; ++i) {
      const auto start = Clock::now();
      forward(weights, cache, &token, 1, logits.data());
      token = argmax(logits);
      seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    return 1.0 / median(seconds);
  }
};

// Runs the PyTorch twin once (its own warm-up, then one timed run) and returns its report.
nlohmann::json run_torch(const Options& o, int threads, const std::string& logits_path) {
  std::string command =
      cat("/usr/bin/python3 '", o.torch_script, "' --model '", o.dir, "' --threads ", threads,
          " --prompt ", o.prompt, " --tokens ", o.tokens, " --runs 1");
  if (!logits_path.empty()) command += cat(" --logits-out '", logits_path, "'");
  return bench::run_json_command(command, "torch_decode.py");
}

// Relative RMS difference of two logit vectors (torch computes activations in BF16, so about
// a percent is expected; a wrong model would give ~100%).
double relative_rms_difference(const std::vector<float>& a, const std::string& path) {
  std::vector<float> b(a.size());
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(b.data()), std::streamsize(b.size() * 4)))
    fail(path, ": expected ", b.size(), " float32 logits");
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(a[i]) * a[i];
  }
  return std::sqrt(diff / norm);
}

// One round: bandwidth, then bitdelta, then PyTorch, back to back, so that the ratios compare
// numbers taken under the same conditions (the machine may be shared).
struct Round {
  double bandwidth = 0;  // bytes/s
  double ours = 0;       // tokens/s
  double torch = 0;      // tokens/s; 0 without --no-torch
};

// Prints the rounds and their medians, then one JSON line; returns the exit status.
int report(const Options& o, int threads, int64_t params, double bytes,
           const std::vector<Round>& rounds, double logits_diff, const std::string& load_before) {
  std::vector<double> bandwidth, ours, torch, ours_of_limit, torch_of_limit, ours_over_torch;
  std::printf("threads %d, %.3fB parameters, %.3f GB of weights read per token\n", threads,
              double(params) / 1e9, bytes / 1e9);
  std::printf(
      "round  bandwidth GB/s  limit tok/s  bitdelta tok/s (of limit)  torch tok/s (of limit)\n");
  for (size_t r = 0; r < rounds.size(); ++r) {
    const Round& round = rounds[r];
    const double limit = round.bandwidth / bytes;
    bandwidth.push_back(round.bandwidth / 1e9);
    ours.push_back(round.ours);
    ours_of_limit.push_back(round.ours / limit);
    std::printf("%5zu  %14.1f  %11.2f  %14.2f (%5.1f%%)", r + 1, round.bandwidth / 1e9, limit,
                round.ours, 100 * round.ours / limit);
    if (round.torch > 0) {
      torch.push_back(round.torch);
      torch_of_limit.push_back(round.torch / limit);
      ours_over_torch.push_back(round.ours / round.torch);
      std::printf("  %11.2f (%5.1f%%)", round.torch, 100 * round.torch / limit);
    }
    std::printf("\n");
  }
  nlohmann::json json = {
      {"threads", threads},
      {"params", params},
      {"weight_bytes_per_token", bytes},
      {"prompt", o.prompt},
      {"tokens", o.tokens},
      {"rounds", o.runs},
      {"load_average_before", load_before},
      {"load_average_after", load_average()},
      {"read_bandwidth_GBps", median(bandwidth)},
      {"limit_tokens_per_s", median(bandwidth) * 1e9 / bytes},
      {"bitdelta", {{"tokens_per_s", median(ours)}, {"of_limit", median(ours_of_limit)}}},
  };
  std::printf(
      "median: bandwidth %.1f GB/s, limit %.2f tokens/s; bitdelta %.2f tokens/s = %.1f%% of "
      "the limit\n",
      median(bandwidth), median(bandwidth) * 1e9 / bytes, median(ours),
      100 * median(ours_of_limit));
  if (!torch.empty()) {
    json["torch"] = {{"tokens_per_s", median(torch)}, {"of_limit", median(torch_of_limit)}};
    json["bitdelta_over_torch"] = median(ours_over_torch);
    json["prompt_logits_relative_rms_difference"] = logits_diff;
    std::printf("median: torch %.2f tokens/s = %.1f%% of the limit; bitdelta / torch = %.2f\n",
                median(torch), 100 * median(torch_of_limit), median(ours_over_torch));
    std::printf("prompt logits: bitdelta and torch differ by %.2f%% (relative RMS)\n",
                100 * logits_diff);
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

  bench::ensure_random_checkpoint(o.dir);
  const Checkpoint checkpoint(o.dir);
  LlamaWeights weights = weights_from_checkpoint(checkpoint);
  copy_linears_for_decode(weights);  // as bitdelta generate does
  const double bytes = bench::weight_bytes_per_token(weights);

  Decoder decoder(weights, o);
  decoder.run(o.tokens);  // warm-up: page mappings, thread pool
  std::vector<Round> rounds;
  double logits_diff = -1;
  for (int r = 0; r < o.runs; ++r) {
    std::cerr << "round " << r + 1 << " of " << o.runs << " ...\n";
    Round round;
    round.bandwidth = measure_read_bandwidth(size_t(1) << 30, 3);
    round.ours = decoder.run(o.tokens);
    if (o.torch) {
      const std::string logits_path = r == 0 ? o.dir + "/torch_prompt_logits.f32" : "";
      round.torch = run_torch(o, threads, logits_path).at("tokens_per_s").get<double>();
      if (r == 0) {
        logits_diff = relative_rms_difference(decoder.prompt_logits, logits_path);
        std::filesystem::remove(logits_path);
      }
    }
    rounds.push_back(round);
  }
  return report(o, threads, checkpoint.parameter_count(), bytes, rounds, logits_diff, load_before);
}

}  // namespace
}  // namespace bd

int main(int argc, char** argv) {
  return bd::bench::guarded_main("decode_bench", bd::run, argc, argv);
}
