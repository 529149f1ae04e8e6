// DeltaSoup's speed and memory at scale: n synthetic adapters of one base, each holding every
// block linear as packed signs plus a per-matrix scale, aggregated by `make_soup` with several
// rules; input bytes per second against the machine's measured read bandwidth, and each rule's
// peak resident memory (VmHWM of a child process per rule, so that one rule's peak does not hide
// another's; it counts the pages of the memory-mapped inputs that are resident too).
//
//   build/soup_bench [--n 100] [--hidden 2048] [--intermediate 5632] [--layers 4]
//                    [--methods trimmed-mean,median,mean,krum] [--dir DIR] [--threads N]
//                    [--target NAME] [--granularity matrix|row]
//
// Defaults: 4 layers of the TinyLlama block shape (q, k, v, o 2048², gate, up, down 2048×5632):
// 206M compressed weights per adapter, 25.7 MB of signs each, 2.6 GB for n = 100. The base
// (zeros, F32) and the adapters are written into --dir (default /tmp/bitdelta-soup-bench) once
// and reused; the first soup reads them from the page cache when memory allows. Trimmed mean
// uses β = 0.1; Krum f = (n − 3) / 2 capped at 30. --target runs the kernels of one SIMD target
// this CPU supports (Highway's name: AVX3_DL, AVX3, AVX2, SSE4, ...), e.g. the AVX2 path on an
// AVX-512 machine. --granularity row gives the adapters a scale per row (the soup then orders the
// contributions row by row) and keeps them in DIR-row.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/threads.h"
#include "delta/compress.h"
#include "hwy/targets.h"
#include "io/adapter.h"
#include "io/checkpoint.h"
#include "kernels/membw.h"
#include "model/byte_tokenizer.h"
#include "model/llama.h"
#include "soup/soup.h"
#include "util/bench_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;

struct Options {
  int64_t n = 100, hidden = 2048, intermediate = 5632, layers = 4;
  std::vector<std::string> methods = {"trimmed-mean", "median", "mean", "krum"};
  std::string dir = "/tmp/bitdelta-soup-bench";
  int threads = 0;
  std::string target;    // empty: the best this CPU supports
  bool per_row = false;  // --granularity row: the adapters have a scale per row
};

Options parse_options(int argc, char** argv) {
  Options o;
  bool dir_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(flag, " needs a value");
      return argv[++i];
    };
    if (flag == "--n") {
      o.n = std::stoll(value());
    } else if (flag == "--hidden") {
      o.hidden = std::stoll(value());
    } else if (flag == "--intermediate") {
      o.intermediate = std::stoll(value());
    } else if (flag == "--layers") {
      o.layers = std::stoll(value());
    } else if (flag == "--methods") {
      o.methods.clear();
      std::stringstream list(value());
      for (std::string m; std::getline(list, m, ',');) o.methods.push_back(m);
    } else if (flag == "--dir") {
      o.dir = value();
      dir_given = true;
    } else if (flag == "--threads") {
      o.threads = std::stoi(value());
    } else if (flag == "--target") {
      o.target = value();
    } else if (flag == "--granularity") {
      const std::string g = value();
      if (g != "matrix" && g != "row") fail("--granularity must be matrix or row, got ", g);
      o.per_row = g == "row";
    } else {
      fail("unknown option ", flag, " (see the comment at the top of bench/soup_bench.cpp)");
    }
  }
  if (o.n < 3 || o.hidden < 8 || o.intermediate < 8 || o.layers < 1)
    fail("--n must be >= 3 and the shape positive");
  if (o.per_row && !dir_given) o.dir += "-row";
  return o;
}

LlamaConfig bench_config(const Options& o) {
  LlamaConfig c;
  c.vocab_size = 258;
  c.hidden_size = o.hidden;
  c.intermediate_size = o.intermediate;
  c.num_hidden_layers = o.layers;
  c.num_attention_heads = o.hidden / 64;
  c.num_key_value_heads = o.hidden / 64;
  c.head_dim = 64;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  c.bos_token_id = kByteBosId;
  c.eos_token_id = kByteEosId;
  c.torch_dtype = "float32";
  return c;
}

// The base (every tensor zero) and n adapters with random signs and scales, unless present.
std::vector<std::string> ensure_inputs(const Options& o, const LlamaConfig& config) {
  const std::string base = o.dir + "/base";
  std::vector<TensorSpec> specs = llama_tensor_specs(config);
  if (!path_exists(base + "/model.safetensors")) {
    fs::create_directories(o.dir);
    int64_t largest = 0;
    for (const TensorSpec& s : specs) largest = std::max(largest, shape_numel(s.shape));
    std::vector<float> zeros(static_cast<size_t>(largest), 0.0f);
    std::vector<NamedTensor> tensors;
    for (const TensorSpec& s : specs)
      tensors.push_back({s.name, TensorView{DType::F32, s.shape, zeros.data()}});
    save_checkpoint(base, config, tensors, byte_tokenizer_json(), {}, true);
  }
  const std::string fingerprint = Checkpoint(base).fingerprint();
  std::vector<std::string> paths;
  for (int64_t k = 0; k < o.n; ++k) {
    const std::string path = o.dir + "/c" + std::to_string(k) + ".bitdelta";
    paths.push_back(path);
    if (path_exists(path)) continue;
    std::mt19937_64 rng(uint64_t(k) + 1);
    std::vector<std::vector<uint8_t>> signs;
    std::vector<std::vector<float>> scales;
    std::vector<AdapterMatrix> matrices;
    for (const TensorSpec& s : specs) {
      if (!is_compressed_weight(s.name)) continue;
      const int64_t out = s.shape[0], in = s.shape[1], row_bytes = (in + 7) / 8;
      signs.emplace_back(static_cast<size_t>(out * row_bytes));
      for (size_t i = 0; i + 8 <= signs.back().size(); i += 8) {
        const uint64_t word = rng();
        std::memcpy(signs.back().data() + i, &word, 8);
      }
      if (in % 8)  // padding bits stay 0
        for (int64_t r = 0; r < out; ++r)
          signs.back()[size_t(r * row_bytes + row_bytes - 1)] &= uint8_t((1u << (in % 8)) - 1);
      scales.emplace_back();
      for (int64_t r = 0; r < (o.per_row ? out : 1); ++r)
        scales.back().push_back(0.001f * float(1 + rng() % 1000) / 1000.0f);
      matrices.push_back({s.name, out, in,
                          TensorView{DType::U8, {out, row_bytes}, signs.back().data()},
                          TensorView{DType::F32, {o.per_row ? out : 1}, scales.back().data()}});
    }
    AdapterInfo info;
    info.base_fingerprint = fingerprint;
    info.finetune_fingerprint = std::string(64, '0');
    info.scale_mode = "mean";
    info.granularity = o.per_row ? "row" : "matrix";
    info.tool_version = BITDELTA_VERSION;
    info.created = "2026-12-02T00:00:00Z";
    write_adapter(path, info, matrices, {}, true);
    std::fprintf(stderr, "\rwrote adapter %lld of %lld", (long long)k + 1, (long long)o.n);
  }
  std::fprintf(stderr, "\n");
  return paths;
}

// Seconds to read every input file once into memory with all threads (pread of 1 MiB pieces,
// one file per thread at a time, best of 3): the fastest any soup can take in its inputs.
double plain_read_seconds(const std::vector<std::string>& paths) {
  double best = 1e30;
  for (int round = 0; round < 3; ++round) {
    const auto start = std::chrono::steady_clock::now();
    uint64_t checksum = 0;
    bool failed = false;
#pragma omp parallel reduction(+ : checksum) reduction(|| : failed)
    {
      std::vector<uint64_t> buffer(size_t(1) << 17);  // 1 MiB
#pragma omp for schedule(dynamic)
      for (size_t k = 0; k < paths.size(); ++k) {
        const int fd = ::open(paths[k].c_str(), O_RDONLY);
        failed = failed || fd < 0;
        off_t offset = 0;
        for (ssize_t got;
             fd >= 0 && (got = ::pread(fd, buffer.data(), 8 * buffer.size(), offset)) > 0;) {
          offset += got;
          checksum += buffer[0] + buffer[size_t(got - 1) / 8];
        }
        if (fd >= 0) ::close(fd);
      }
    }
    if (failed) fail("cannot open the inputs in ", paths[0]);
    if (checksum == 42) std::fprintf(stderr, " ");  // keeps the reads' results alive
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

// Restricts Highway's dispatch to the target named `name`, which this CPU must support.
void use_simd_target(const std::string& name) {
  std::string names;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    if (name == hwy::TargetName(target)) return hwy::SetSupportedTargetsForTest(target);
    names += std::string(names.empty() ? "" : ", ") + hwy::TargetName(target);
  }
  fail("--target ", name, ": not one this CPU supports (", names, ")");
}

// The SIMD target the kernels dispatch to: the best one supported (and allowed).
const char* simd_target_name() {
  return hwy::TargetName(hwy::SupportedAndGeneratedTargets()[0]);
}

struct Run {
  double seconds = 0;
  double peak_rss_mib = 0;
};

// One soup, timed: what the child process (this program with --soup-child METHOD) does.
double timed_soup(const Options& o, const std::vector<std::string>& paths,
                  const std::string& method) {
  SoupOptions options;
  options.params.method = parse_soup_method(method);
  options.params.trim = 0.1;
  options.params.byzantine = std::min<int64_t>(30, (o.n - 3) / 2);
  options.quiet = true;
  const Checkpoint base(o.dir + "/base");
  const auto start = std::chrono::steady_clock::now();
  make_soup(SoupInputs(paths), base, options, o.dir + "/soup.bitdelta", true);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// One soup in a fresh process (this program again; OpenMP does not survive fork): its time and
// the child's peak resident memory.
Run run_soup(const Options& o, const std::string& method) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) fail("pipe failed");
  std::vector<std::string> words = {"/proc/self/exe",
                                    "--soup-child",
                                    method,
                                    "--n",
                                    std::to_string(o.n),
                                    "--hidden",
                                    std::to_string(o.hidden),
                                    "--intermediate",
                                    std::to_string(o.intermediate),
                                    "--layers",
                                    std::to_string(o.layers),
                                    "--dir",
                                    o.dir,
                                    "--threads",
                                    std::to_string(o.threads)};
  if (!o.target.empty()) words.insert(words.end(), {"--target", o.target});
  if (o.per_row) words.insert(words.end(), {"--granularity", "row"});
  std::vector<char*> child_argv;
  for (std::string& w : words) child_argv.push_back(w.data());
  child_argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  pid_t child = 0;
  const int spawned =
      posix_spawn(&child, "/proc/self/exe", &actions, nullptr, child_argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (spawned != 0) fail("cannot start the soup child: ", std::strerror(spawned));
  std::string text;
  char buffer[256];
  for (ssize_t got; (got = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;)
    text.append(buffer, size_t(got));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail(method, ": the soup child failed");
  std::istringstream numbers(text);
  Run run;
  numbers >> run.seconds >> run.peak_rss_mib;
  return run;
}

int run(int argc, char** argv) {
  std::string child_method;
  if (argc >= 3 && std::string(argv[1]) == "--soup-child") {
    child_method = argv[2];
    argv += 2;
    argc -= 2;
  }
  const Options o = parse_options(argc, argv);
  set_threads(o.threads);
  if (!o.target.empty()) use_simd_target(o.target);
  const LlamaConfig config = bench_config(o);
  const std::vector<std::string> paths = ensure_inputs(o, config);
  if (!child_method.empty()) {
    const double seconds = timed_soup(o, paths, child_method);
    // VmHWM counts since this process's exec, unlike getrusage's ru_maxrss, which a spawned
    // child inherits from its parent.
    std::printf("%.9g %.9g\n", seconds, bench::memory_mib().at("VmHWM"));
    return 0;
  }
  int64_t input_bytes = 0, weights = 0;
  for (const std::string& path : paths) input_bytes += int64_t(fs::file_size(path));
  const AdapterFile first(paths[0]);
  for (const AdapterMatrix& m : first.matrices()) weights += m.out * m.in;
  const double bandwidth = measure_read_bandwidth();
  const double read_seconds = plain_read_seconds(paths);
  std::printf(
      "n %lld adapters x %.1fM compressed weights (%.2f GB of input), %d threads, SIMD %s; "
      "read bandwidth %.1f GB/s; plain read of the input files %.3f s (%.1f GB/s)\n",
      (long long)o.n, double(weights) / 1e6, double(input_bytes) / 1e9, num_threads(),
      simd_target_name(), bandwidth / 1e9, read_seconds, double(input_bytes) / read_seconds / 1e9);
  std::printf("%-14s %9s %12s %10s %13s %12s\n", "method", "seconds", "input GB/s", "of read bw",
              "of file read", "peak RSS MiB");
  nlohmann::json json = {{"n", o.n},
                         {"weights", weights},
                         {"input_bytes", input_bytes},
                         {"threads", num_threads()},
                         {"simd", simd_target_name()},
                         {"read_bandwidth", bandwidth},
                         {"plain_read_seconds", read_seconds}};
  for (const std::string& method : o.methods) {
    const Run r = run_soup(o, method);
    const double rate = double(input_bytes) / r.seconds;
    std::printf("%-14s %9.2f %12.3f %9.1f%% %12.1f%% %12.0f\n", method.c_str(), r.seconds,
                rate / 1e9, 100 * rate / bandwidth, 100 * read_seconds / r.seconds, r.peak_rss_mib);
    json[method] = {{"seconds", r.seconds},
                    {"input_bytes_per_s", rate},
                    {"of_read_bandwidth", rate / bandwidth},
                    {"of_plain_read", read_seconds / r.seconds},
                    {"peak_rss_mib", r.peak_rss_mib}};
  }
  std::printf("%s\n", json.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace bd

int main(int argc, char** argv) {
  return bd::bench::guarded_main("soup_bench", bd::run, argc, argv);
}
