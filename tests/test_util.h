// Helpers shared by the test programs: scratch folders and files, running the CLI and the Python
// references, expected errors, normwise and per-element errors, and small random Llama models.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "io/checkpoint.h"
#include "model/llama_params.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"

namespace bd::test {

// ---- files -------------------------------------------------------------------------------------

// Writes `bytes` to `path`, replacing what was there.
inline void write_bytes(const std::string& path, std::string_view bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), std::streamsize(bytes.size()));
}

// Raw values in host (little-endian) order, the way the Python references read and write them.
template <typename T>
void write_values(const std::string& path, const std::vector<T>& values) {
  write_bytes(path, {reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T)});
}
template <typename T>
std::vector<T> read_values(const std::string& path) {
  const std::string bytes = read_file(path);
  std::vector<T> values(bytes.size() / sizeof(T));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
  return values;
}

// The names in folder `dir`, sorted.
inline std::vector<std::string> folder_entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// A fresh folder under /tmp, removed with everything in it when the object dies.
class ScratchDir {
 public:
  ScratchDir() {
    char name[] = "/tmp/bitdelta_test_XXXXXX";
    if (!::mkdtemp(name)) throw std::runtime_error("mkdtemp failed for /tmp/bitdelta_test_*");
    path_ = name;
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  // Writes `contents` to path()/name and returns the full path.
  std::string write(const std::string& name, const std::string& contents) const {
    const std::string file = *this / name;
    write_bytes(file, contents);
    return file;
  }

 private:
  std::string path_;
};

// ---- commands ----------------------------------------------------------------------------------

// `word` as one shell word, whatever characters it holds.
inline std::string shell_quote(const std::string& word) {
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs a shell command line, capturing stdout, and stderr through a file in `scratch`.
inline CommandResult run_command(const std::string& command_line, const ScratchDir& scratch) {
  const std::string err_path = scratch / "stderr.txt";
  CommandResult result;
  std::FILE* pipe = ::popen((command_line + " 2>" + shell_quote(err_path)).c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, got);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.err = read_file(err_path);
  return result;
}

// Runs the bitdelta binary with `arguments` (a shell fragment).
inline CommandResult run_bitdelta(const std::string& arguments, const ScratchDir& scratch) {
  return run_command(shell_quote(BITDELTA_BINARY) + " " + arguments, scratch);
}

// True when Debian's python3 has PyTorch and numpy for the reference checks.
inline bool have_torch() {
  static const bool available =
      std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") == 0;
  return available;
}

inline std::string reference_script(const std::string& name) {
  return BITDELTA_SOURCE_DIR "/tests/reference/" + name;
}

// Runs `/usr/bin/python3 tests/reference/<script> <arguments>` (arguments: a shell fragment).
inline CommandResult run_reference(const std::string& script, const std::string& arguments,
                                   const ScratchDir& scratch) {
  return run_command("/usr/bin/python3 " + shell_quote(reference_script(script)) + " " + arguments,
                     scratch);
}

// The optimizer fields of train_ref.py's spec.json: the warm-up/cosine schedule, AdamW and the
// clipping norm.
inline nlohmann::json train_ref_optimizer_spec(const LrSchedule& schedule, const AdamWConfig& adamw,
                                               double clip) {
  return {{"steps", schedule.total_steps},
          {"lr", schedule.peak_lr},
          {"warmup", schedule.warmup_steps},
          {"min_lr_ratio", schedule.min_lr_ratio},
          {"beta1", adamw.beta1},
          {"beta2", adamw.beta2},
          {"eps", adamw.eps},
          {"weight_decay", adamw.weight_decay},
          {"clip", clip}};
}

// ---- expected errors ---------------------------------------------------------------------------

// The message of the bd::Error that `action` throws; "" when it throws none.
template <typename Action>
std::string error_of(Action action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

// Expects `action` to throw bd::Error whose one-line message contains every piece.
template <typename Action>
void expect_error(Action action, const std::vector<std::string>& pieces) {
  try {
    action();
    ADD_FAILURE() << "no error; expected one containing '" << pieces.front() << "'";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    for (const std::string& piece : pieces)
      EXPECT_NE(message.find(piece), std::string::npos) << "'" << piece << "' not in: " << message;
  }
}

// A refused CLI run: `exit_code`, nothing on stdout, and exactly one line on stderr containing
// every piece.
inline void expect_refusal(const CommandResult& run, int exit_code,
                           const std::vector<std::string>& pieces) {
  EXPECT_EQ(run.exit_code, exit_code) << run.err;
  EXPECT_TRUE(run.out.empty()) << run.out;
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  EXPECT_TRUE(run.err.ends_with('\n')) << run.err;
  for (const std::string& piece : pieces)
    EXPECT_NE(run.err.find(piece), std::string::npos) << "'" << piece << "' not in: " << run.err;
}

// ---- numbers -----------------------------------------------------------------------------------

// max |ours - reference| over n elements.
template <typename A, typename B>
double max_abs_difference(const A* ours, const B* reference, int64_t n) {
  double diff = 0;
  for (int64_t i = 0; i < n; ++i)
    diff = std::max(diff, std::abs(double(ours[i]) - double(reference[i])));
  return diff;
}

// Normwise: max |ours - reference| / max |reference| over n elements. Every element is measured
// against the largest one, so an error in a small entry hides under the scale of the large ones.
// That is the right measure only where the error of every entry is set by that common scale:
// results that went through the same long sums (logits), finite-difference gradients (whose
// error is the loss's rounding over ε, the same for every entry) and gradients with cancellation.
// Elsewhere use elementwise_error / all_close below. An all-zero reference gives NaN or
// infinity, which fails every bound: a relative error says nothing about it.
template <typename A, typename B>
double max_relative_error(const A* ours, const B* reference, int64_t n) {
  double scale = 0;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::abs(double(reference[i])));
  return max_abs_difference(ours, reference, n) / scale;
}
template <typename A, typename B>
double max_relative_error(const std::vector<A>& ours, const std::vector<B>& reference) {
  EXPECT_EQ(ours.size(), reference.size());
  return max_relative_error(ours.data(), reference.data(),
                            int64_t(std::min(ours.size(), reference.size())));
}

// Per element: element i has its own bound, and the measure is the worst
// |ours[i] - reference[i]| / bound(i); at most 1 means every element is within its bound. A NaN
// on either side counts as infinitely far, and so does any difference where the bound is 0.
struct ElementwiseError {
  double worst = 0;             // the largest ratio
  int64_t worst_index = -1;     // where it is (-1 for n = 0)
  double worst_difference = 0;  // |ours - reference| there
  double worst_bound = 0;       // and its bound
  int64_t failures = 0;         // elements whose ratio exceeds 1
  int64_t first_failure = -1;   // the first of them
};

template <typename A, typename B, typename Bound>
ElementwiseError elementwise_error(const A* ours, const B* reference, int64_t n,
                                   const Bound& bound) {
  ElementwiseError e;
  for (int64_t i = 0; i < n; ++i) {
    const double difference = std::abs(double(ours[i]) - double(reference[i]));
    const double limit = double(bound(i));
    double ratio = 0;
    if (std::isnan(difference))
      ratio = HUGE_VAL;
    else if (difference > 0)
      ratio = limit > 0 ? difference / limit : HUGE_VAL;
    if (ratio > 1 && e.failures++ == 0) e.first_failure = i;
    if (e.worst_index < 0 || ratio > e.worst) {
      e.worst = ratio;
      e.worst_index = i;
      e.worst_difference = difference;
      e.worst_bound = limit;
    }
  }
  return e;
}

// The usual bound atol + rtol·|reference[i]|.
template <typename A, typename B>
ElementwiseError elementwise_error(const A* ours, const B* reference, int64_t n, double atol,
                                   double rtol) {
  return elementwise_error(ours, reference, n,
                           [&](int64_t i) { return atol + rtol * std::abs(double(reference[i])); });
}

template <typename A, typename B>
double max_elementwise_error(const A* ours, const B* reference, int64_t n, double atol,
                             double rtol) {
  return elementwise_error(ours, reference, n, atol, rtol).worst;
}

// For EXPECT_TRUE / ASSERT_TRUE: success when every element is within its bound, otherwise a
// message with how many are not, the first of them and the worst, e.g.
//   EXPECT_TRUE(test::all_within(out.data(), want.data(), n, bound)) << "context";
template <typename A, typename B, typename Bound>
::testing::AssertionResult all_within(const A* ours, const B* reference, int64_t n,
                                      const Bound& bound) {
  const ElementwiseError e = elementwise_error(ours, reference, n, bound);
  if (e.failures == 0) return ::testing::AssertionSuccess();
  auto describe = [&](int64_t i) {
    return ::testing::Message() << "[" << i << "]: " << double(ours[i]) << " vs "
                                << double(reference[i]) << " (difference "
                                << std::abs(double(ours[i]) - double(reference[i])) << ", bound "
                                << double(bound(i)) << ")";
  };
  return ::testing::AssertionFailure()
         << e.failures << " of " << n << " elements outside their bounds; first "
         << describe(e.first_failure) << "; worst " << describe(e.worst_index);
}

template <typename A, typename B>
::testing::AssertionResult all_close(const A* ours, const B* reference, int64_t n, double atol,
                                     double rtol) {
  return all_within(ours, reference, n,
                    [&](int64_t i) { return atol + rtol * std::abs(double(reference[i])); });
}
template <typename A, typename B>
::testing::AssertionResult all_close(const std::vector<A>& ours, const std::vector<B>& reference,
                                     double atol, double rtol) {
  if (ours.size() != reference.size())
    return ::testing::AssertionFailure()
           << ours.size() << " elements against a reference of " << reference.size();
  return all_close(ours.data(), reference.data(), int64_t(ours.size()), atol, rtol);
}

// ---- small Llama models ------------------------------------------------------------------------

// The sizes of a small Llama in config.json's order, and the fields tests often set; the rest
// keep LlamaConfig's defaults.
struct LlamaSpec {
  int64_t vocab, hidden, intermediate, layers, heads, kv_heads, head_dim;
  double rms_norm_eps = LlamaConfig{}.rms_norm_eps;
  double rope_theta = LlamaConfig{}.rope_theta;
  int64_t max_positions = LlamaConfig{}.max_position_embeddings;
  bool tied = false;
};

inline LlamaConfig llama_config(const LlamaSpec& spec) {
  LlamaConfig config;
  config.vocab_size = spec.vocab;
  config.hidden_size = spec.hidden;
  config.intermediate_size = spec.intermediate;
  config.num_hidden_layers = spec.layers;
  config.num_attention_heads = spec.heads;
  config.num_key_value_heads = spec.kv_heads;
  config.head_dim = spec.head_dim;
  config.rms_norm_eps = spec.rms_norm_eps;
  config.rope_theta = spec.rope_theta;
  config.max_position_embeddings = spec.max_positions;
  config.tie_word_embeddings = spec.tied;
  return config;
}

// LlamaParams with matrices ~ N(0, matrix_std²) and norm weights 1 + N(0, norm_std²): larger than
// init_random's, so every layer is far from linear and attention far from uniform.
inline LlamaParams random_llama_params(const LlamaConfig& config, uint64_t seed, float matrix_std,
                                       float norm_std) {
  LlamaParams params(config);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const ParamSlice& slice : params.slices()) {
    float* values = params.data() + slice.offset;
    const bool norm = slice.shape.size() == 1;
    for (size_t i = 0; i < slice.numel; ++i)
      values[i] = norm ? 1.0f + norm_std * normal(rng) : matrix_std * normal(rng);
  }
  return params;
}

// N(0, 1) tensors with the names and shapes of a Hugging Face Llama of `config`, stored as
// `dtype` (F32, BF16 or F16). The names are written out here, not taken from LlamaParams, so the
// io tests check them independently.
struct LlamaTensors {
  DType dtype = DType::F32;
  std::map<std::string, Shape> shapes;
  std::map<std::string, std::vector<uint8_t>> bytes;

  void erase(const std::string& name) {
    shapes.erase(name);
    bytes.erase(name);
  }
  std::vector<NamedTensor> views() const {  // sorted by name
    std::vector<NamedTensor> out;
    for (const auto& [name, data] : bytes)
      out.push_back({name, TensorView{dtype, shapes.at(name), data.data()}});
    return out;
  }
};

inline LlamaTensors random_llama_tensors(const LlamaConfig& c, uint32_t seed,
                                         DType dtype = DType::F32) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  LlamaTensors tensors{dtype, {}, {}};
  auto add = [&](const std::string& name, Shape shape) {
    std::vector<float> values(size_t(shape_numel(shape)));
    for (float& x : values) x = normal(rng);
    std::vector<uint8_t>& stored = tensors.bytes[name];
    stored.resize(values.size() * dtype_size(dtype));
    from_f32(dtype, values.data(), stored.data(), values.size());
    tensors.shapes[name] = shape;
  };
  const int64_t H = c.hidden_size, q = c.num_attention_heads * c.head_dim;
  const int64_t kv = c.num_key_value_heads * c.head_dim, I = c.intermediate_size;
  add("model.embed_tokens.weight", {c.vocab_size, H});
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    add(p + "input_layernorm.weight", {H});
    add(p + "post_attention_layernorm.weight", {H});
    add(p + "self_attn.q_proj.weight", {q, H});
    add(p + "self_attn.k_proj.weight", {kv, H});
    add(p + "self_attn.v_proj.weight", {kv, H});
    add(p + "self_attn.o_proj.weight", {H, q});
    add(p + "mlp.gate_proj.weight", {I, H});
    add(p + "mlp.up_proj.weight", {I, H});
    add(p + "mlp.down_proj.weight", {H, I});
  }
  add("model.norm.weight", {H});
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, H});
  return tensors;
}

// The file name transformers gives shard `index` (1-based) of `count`.
inline std::string shard_name(int index, int count) {
  char name[64];
  std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", index, count);
  return name;
}

// Writes a sharded checkpoint folder by hand, the way transformers does: config.json, the
// tensors dealt round-robin over `shards` files, and model.safetensors.index.json mapping each
// name to its file.
inline void write_sharded_checkpoint(const std::string& dir, const LlamaConfig& config,
                                     const std::vector<NamedTensor>& tensors, int shards) {
  make_dirs(dir);
  write_file_atomic(dir + "/config.json", llama_config_json(config), false);
  std::vector<std::vector<NamedTensor>> parts(static_cast<size_t>(shards));
  nlohmann::json weight_map;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int shard = int(i % size_t(shards));
    parts[size_t(shard)].push_back(tensors[i]);
    weight_map[tensors[i].name] = shard_name(shard + 1, shards);
  }
  for (int shard = 0; shard < shards; ++shard)
    write_safetensors(dir + "/" + shard_name(shard + 1, shards), parts[size_t(shard)],
                      {{"format", "pt"}}, false);
  const nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  write_file_atomic(dir + "/model.safetensors.index.json", index.dump(2), false);
}

}  // namespace bd::test
