// What every benchmark program shares: the 1.1B-parameter model shape, reproducible random
// values, medians, the machine's load, running a PyTorch twin, and main()'s error handling.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/llama_config.h"

namespace bd {
struct LlamaWeights;
}

namespace bd::bench {

// TinyLlama-1.1B's shape (hidden 2048, 22 layers, MLP 5632, 32 heads of 64, 4 KV heads, vocab
// 32000, untied head), stored as BF16.
LlamaConfig tinyllama_config();

// The random TinyLlama-shaped BF16 checkpoint the benchmarks share (uniform(-0.035, 0.035)
// matrices, norms 1; ~2.2 GB): written into `dir` unless a matching one is already there.
void ensure_random_checkpoint(const std::string& dir);

// Bytes of weights one decoded token reads: every matrix of every layer, the norms and the head
// (the embedding contributes one row; the KV cache a few MB at short lengths, left out).
double weight_bytes_per_token(const LlamaWeights& weights);

// Uniform in [-1, 1) from a hash of `index` (splitmix64): reproducible and parallel, so that a
// multi-gigabyte random checkpoint is the same on every machine and every thread count.
float hashed_uniform(uint64_t index);

// The median (mean of the middle two for an even count); `values` must not be empty.
double median(std::vector<double> values);

// The value below which a fraction p of `values` lies (the element at index p·n of the sorted
// values); `values` must not be empty.
double percentile(std::vector<double> values, double p);

// The 1, 5 and 15 minute load averages as /proc/loadavg prints them ("1.02 0.88 0.61").
std::string load_average();

// This process's memory figures from /proc/self/status in MiB, by field name: VmRSS, RssAnon,
// RssFile, VmHWM (the peak resident set since exec), ...
std::map<std::string, double> memory_mib();

// Runs a shell command that prints one JSON object on stdout (a PyTorch twin) and returns it;
// throws bd::Error naming `what` when it fails or prints something else.
nlohmann::json run_json_command(const std::string& command, const std::string& what);

// main() for a benchmark: runs `run`, and turns an exception into "PROGRAM: message" and exit 1.
int guarded_main(const char* program, int (*run)(int, char**), int argc, char** argv);

}  // namespace bd::bench
