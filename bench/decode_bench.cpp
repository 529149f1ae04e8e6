// End-to-end decode speed of a 1.1B-parameter Llama (TinyLlama's shape) with random BF16
// weights, against the memory-bandwidth limit and against PyTorch, all measured in one run.
//
//   build-perf/decode_bench [--threads N] [--dir DIR] [--prompt P] [--tokens N] [--runs R]
//                           [--no-torch] [--torch-script PATH]
//
// 1. Writes the random checkpoint (HF folder, ~2.2 GB) into DIR once; later runs reuse it.
// 2. Measures the read bandwidth B of main memory (all threads streaming a 1 GiB buffer, best
//    of 5, before and after decoding): the limit is B ÷ (weight bytes read per token).
// 3. bitdelta: maps the checkpoint, prefills P tokens, then decodes N tokens greedily, R times
//    after one warm-up run; tokens/s = 1 / median time per decoded token.
// 4. PyTorch: bench/torch_decode.py on the same checkpoint, same threads, same P, N, R.
// Prints a table, then one JSON line with every number.
#include <omp.h>

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

namespace bd {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int threads = 0;  // 0: all cores
  std::string dir =
      (std::filesystem::temp_directory_path() / "bitdelta-decode-bench-1.1b").string();
  int64_t prompt = 8;
  int64_t tokens = 32;
  int runs = 3;
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

// TinyLlama-1.1B's shape.
LlamaConfig bench_config() {
  LlamaConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 2048;
  c.intermediate_size = 5632;
  c.num_hidden_layers = 22;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 2048;
  c.torch_dtype = "bfloat16";
  return c;
}

// Marks a folder as this program's output, so that it is reused only when it matches.
const std::map<std::string, std::string> kMetadata = {
    {"generator", "bitdelta bench/decode_bench: uniform(-0.035, 0.035) BF16, norms 1, seed 1"}};

// Uniform in [-1, 1) from a hash of the element's index (splitmix64): reproducible, parallel.
float hashed_uniform(uint64_t index) {
  uint64_t z = index + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return float(z >> 40) * 0x1p-23f - 1.0f;
}

void write_random_checkpoint(const std::string& dir, const LlamaConfig& config) {
  const std::vector<TensorSpec> specs = llama_tensor_specs(config);
  int64_t total = 0;
  for (const TensorSpec& s : specs) total += shape_numel(s.shape);
  std::vector<uint16_t> values(static_cast<size_t>(total));
  std::vector<NamedTensor> tensors;
  int64_t offset = 0;
  for (const TensorSpec& s : specs) {
    const int64_t n = shape_numel(s.shape);
    uint16_t* dst = values.data() + offset;
    const bool norm = s.shape.size() == 1;
    // std 0.02, as Llama initialises its linear layers; norm weights 1.
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      dst[i] = f32_to_bf16(norm ? 1.0f : 0.0346f * hashed_uniform(uint64_t(offset + i)));
    }
    tensors.push_back({s.name, TensorView{DType::BF16, s.shape, dst}});
    offset += n;
  }
  save_checkpoint(dir, config, tensors, "", kMetadata, /*overwrite=*/true);
}

bool reusable(const std::string& dir) {
  if (!std::filesystem::exists(std::filesystem::path(dir) / "config.json")) return false;
  try {
    const Checkpoint checkpoint(dir);
    return checkpoint.metadata().count("generator") &&
           checkpoint.metadata().at("generator") == kMetadata.at("generator");
  } catch (const Error&) {
    return false;
  }
}

// Bytes of weights one decoded token reads: every matrix of every layer, the norms and the
// head (the embedding contributes one row; the KV cache a few MB at these lengths, left out).
double weight_bytes_per_token(const LlamaWeights& w) {
  double bytes = double(w.lm_head.weight.bytes()) + double(w.final_norm.bytes());
  for (const LayerWeights& l : w.layers) {
    for (const Linear* m : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) {
      bytes += double(m->weight.bytes());
    }
    bytes += double(l.attn_norm.bytes() + l.mlp_norm.bytes());
  }
  return bytes;
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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

struct DecodeResult {
  std::vector<double> token_seconds;  // every decoded token of every timed run
  std::vector<double> run_tokens_per_s;
  std::vector<int32_t> generated;   // of the last run
  std::vector<float> first_logits;  // after the prompt
};

DecodeResult decode(const LlamaWeights& weights, const Options& o) {
  const LlamaConfig& c = weights.config;
  const std::vector<int32_t> prompt = prompt_ids(o.prompt, c.vocab_size);
  KVCache cache(c, o.prompt + o.tokens);
  std::vector<float> logits(size_t(c.vocab_size));
  DecodeResult result;
  for (int run = -1; run < o.runs; ++run) {  // run -1: warm-up (page mappings, thread pool)
    cache.reset();
    result.generated.clear();
    forward(weights, cache, prompt.data(), o.prompt, logits.data());
    if (run == -1) result.first_logits = logits;
    int32_t token = argmax(logits);
    const auto start = Clock::now();
    for (int64_t i = 0; i < o.tokens; ++i) {
      const auto t0 = Clock::now();
      forward(weights, cache, &token, 1, logits.data());
      token = argmax(logits);
      const std::chrono::duration<double> dt = Clock::now() - t0;
      if (run >= 0) result.token_seconds.push_back(dt.count());
      result.generated.push_back(token);
    }
    const std::chrono::duration<double> total = Clock::now() - start;
    if (run >= 0) result.run_tokens_per_s.push_back(double(o.tokens) / total.count());
  }
  return result;
}

// Runs the PyTorch twin and returns its JSON report.
nlohmann::json run_torch(const Options& o, int threads, const std::string& logits_path) {
  const std::string command =
      cat("/usr/bin/python3 '", o.torch_script, "' --model '", o.dir, "' --threads ", threads,
          " --prompt ", o.prompt, " --tokens ", o.tokens, " --runs ", o.runs, " --logits-out '",
          logits_path, "'");
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) fail("cannot run ", command);
  std::string output;
  char buffer[4096];
  while (size_t got = fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, got);
  if (pclose(pipe) != 0) fail("torch_decode.py failed: ", command);
  return nlohmann::json::parse(output);
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

double best_bandwidth() {
  return measure_read_bandwidth(size_t(1) << 30, 5);
}

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  set_threads(o.threads);
  const int threads = num_threads();
  const LlamaConfig config = bench_config();

  if (!reusable(o.dir)) {
    std::cerr << "writing random checkpoint to " << o.dir << " ...\n";
    write_random_checkpoint(o.dir, config);
  }
  const Checkpoint checkpoint(o.dir);
  const LlamaWeights weights = weights_from_checkpoint(checkpoint);
  const double bytes = weight_bytes_per_token(weights);

  std::cerr << "measuring read bandwidth ...\n";
  double bandwidth = best_bandwidth();
  std::cerr << "decoding with bitdelta ...\n";
  const DecodeResult ours = decode(weights, o);
  bandwidth = std::max(bandwidth, best_bandwidth());

  const double limit = bandwidth / bytes;
  const double ours_tps = 1.0 / median(ours.token_seconds);
  nlohmann::json report = {
      {"threads", threads},
      {"params", checkpoint.parameter_count()},
      {"weight_bytes_per_token", bytes},
      {"read_bandwidth_GBps", bandwidth / 1e9},
      {"limit_tokens_per_s", limit},
      {"prompt", o.prompt},
      {"tokens", o.tokens},
      {"runs", o.runs},
      {"bitdelta",
       {{"tokens_per_s", ours_tps},
        {"of_limit", ours_tps / limit},
        {"effective_GBps", ours_tps * bytes / 1e9},
        {"run_tokens_per_s", ours.run_tokens_per_s}}},
  };
  std::printf("threads %d, %.3fB parameters, %.3f GB of weights read per token\n", threads,
              double(checkpoint.parameter_count()) / 1e9, bytes / 1e9);
  std::printf("read bandwidth %.1f GB/s -> limit %.2f tokens/s\n", bandwidth / 1e9, limit);
  std::printf("bitdelta  %7.2f tokens/s  %5.1f%% of limit\n", ours_tps, 100 * ours_tps / limit);

  if (o.torch) {
    std::cerr << "decoding with PyTorch ...\n";
    const std::string logits_path = o.dir + "/torch_first_logits.f32";
    const nlohmann::json torch = run_torch(o, threads, logits_path);
    const double torch_tps = torch.at("tokens_per_s").get<double>();
    const double logits_diff = relative_rms_difference(ours.first_logits, logits_path);
    std::filesystem::remove(logits_path);
    report["torch"] = torch;
    report["torch"]["of_limit"] = torch_tps / limit;
    report["bitdelta_over_torch"] = ours_tps / torch_tps;
    report["prompt_logits_relative_rms_difference"] = logits_diff;
    std::printf("torch     %7.2f tokens/s  %5.1f%% of limit  (torch %s)\n", torch_tps,
                100 * torch_tps / limit, torch.at("version").get<std::string>().c_str());
    std::printf("bitdelta / torch = %.2f; prompt logits differ by %.2f%% (relative RMS)\n",
                ours_tps / torch_tps, 100 * logits_diff);
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
    std::fprintf(stderr, "decode_bench: %s\n", e.what());
    return 1;
  }
}
