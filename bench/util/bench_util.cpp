#include "bench_util.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>

#include "core/error.h"

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

double median(std::vector<double> values) {
  if (values.empty()) fail("median of no values");
  std::sort(values.begin(), values.end());
  const size_t m = values.size() / 2;
  return values.size() % 2 ? values[m] : 0.5 * (values[m - 1] + values[m]);
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
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
