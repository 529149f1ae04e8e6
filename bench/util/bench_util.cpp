#include "bench_util.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "core/error.h"
#include "io/checkpoint.h"
#include "model/llama.h"

namespace bd::bench {

LlamaConfig tinyllama_config() {
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

float hashed_uniform(uint64_t index) {
  uint64_t z = index + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return float(z >> 40) * 0x1p-23f - 1.0f;  // the top 24 bits, scaled to [-1, 1)
}

// Marks a folder as this program's output, so that it is reused only when it matches.
namespace {

const std::map<std::string, std::string> kMetadata = {
    {"generator", "bitdelta bench/decode_bench: uniform(-0.035, 0.035) BF16, norms 1, seed 1"}};

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

}  // namespace

void ensure_random_checkpoint(const std::string& dir) {
  if (reusable(dir)) return;
  std::cerr << "writing the random 1.1B checkpoint to " << dir << " ...\n";
  write_random_checkpoint(dir, tinyllama_config());
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

double median(std::vector<double> values) {
  if (values.empty()) fail("median of no values");
  std::sort(values.begin(), values.end());
  const size_t m = values.size() / 2;
  return values.size() % 2 ? values[m] : 0.5 * (values[m - 1] + values[m]);
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) fail("percentile of no values");
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, size_t(p * double(values.size())))];
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

std::map<std::string, double> memory_mib() {
  std::ifstream in("/proc/self/status");
  std::map<std::string, double> values;
  for (std::string line; std::getline(in, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos || line.find(" kB") == std::string::npos) continue;
    values[line.substr(0, colon)] = std::stod(line.substr(colon + 1)) / 1024;
  }
  return values;
}

nlohmann::json run_json_command(const std::string& command, const std::string& what) {
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) fail("cannot run ", what, ": ", command);
  std::string output;
  char buffer[4096];
  while (size_t got = fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, got);
  if (pclose(pipe) != 0) fail(what, " failed: ", command);
  try {
    return nlohmann::json::parse(output);
  } catch (const nlohmann::json::exception&) {
    fail(what, " printed something other than one JSON object: ", output.substr(0, 200));
  }
}

int guarded_main(const char* program, int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace bd::bench
