// End-to-end speed and memory of `bitdelta compress` on a 1.1B-parameter Llama pair (TinyLlama's
// shape, BF16), against reading both input files once and against PyTorch, all in one run.
//
//   build/compress_bench [--threads N] [--dir DIR] [--runs R] [--no-torch]
//                                 [--bitdelta PATH] [--torch-script PATH]
//
// 1. Writes the pair into DIR once (later runs reuse it): a random base (uniform, std 0.02) and a
//    fine-tune whose every block linear moves by a rank-8 product plus noise (std ≈ 0.001 and
//    0.0005) and whose norms move by up to 1%; embeddings and head stay the base's.
// 2. Warms the page cache with one read of both model files, then times, R times in turn:
//    (a) a plain read() loop over both files (1 MiB buffer, one thread),
//    (b) the bitdelta CLI compressing the pair cold: its fingerprint cache (io/fingerprint_cache.h,
//        here a folder of this benchmark's own, DIR/fingerprint-cache) emptied first, so both
//        models are hashed, as in the first compression of a pair on a machine,
//    (c) the same warm: both fingerprints in the cache (stored by (b)), as in every later
//        compression of the pair; nothing is hashed, and
//    (d) a new fine-tune of a known base: the base's fingerprint cached, the fine-tune's not, as
//        in the first compression of each fine-tune; one model is hashed.
//    Each compression is a child process: wall time, CPU time and peak RSS from wait4(). Ratios
//    to the read loop are medians of each round's ratio (the machine's load drifts).
// 3. Times the floor that fingerprinting sets: both checkpoints' SHA-256 fingerprints computed at
//    once on two threads, without the cache (what (b) must hash, one stream per model).
// 4. PyTorch: bench/torch_compress.py on the same pair and threads (wall time, peak RSS), and
//    checks that both adapters hold the same signs, scales (to 1e-5) and deltas.
// Prints a table, then one JSON line with every number.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "delta/compress.h"
#include "io/checkpoint.h"
#include "io/fingerprint.h"
#include "io/fingerprint_cache.h"
#include "model/llama.h"
#include "util/bench_util.h"

namespace bd {
namespace {

using bench::hashed_uniform;
using bench::load_average;
using bench::median;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Options {
  int threads = 0;  // 0: all cores
  std::string dir = (fs::temp_directory_path() / "bitdelta-compress-bench-1.1b").string();
  int runs = 3;
  bool torch = true;
  std::string bitdelta;  // default: next to this program
  std::string torch_script = (fs::path(__FILE__).parent_path() / "torch_compress.py").string();
};

Options parse_options(int argc, char** argv) {
  Options o;
  o.bitdelta = (fs::canonical("/proc/self/exe").parent_path() / "bitdelta").string();
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
    else if (flag == "--runs")
      o.runs = std::stoi(value());
    else if (flag == "--no-torch")
      o.torch = false;
    else if (flag == "--bitdelta")
      o.bitdelta = value();
    else if (flag == "--torch-script")
      o.torch_script = value();
    else
      fail("unknown option ", flag, " (see the comment at the top of bench/compress_bench.cpp)");
  }
  if (o.runs < 1) fail("--runs must be >= 1");
  return o;
}

// Marks the folders as this program's output, so that they are reused only when they match.
const std::string kGenerator =
    "bitdelta bench/compress_bench v1: base uniform std 0.02 BF16; fine-tune: block linears + "
    "rank-8 product (std 0.001) + uniform noise (std 0.0005), norms 1 + U(-0.01, 0.01)";

constexpr int64_t kRank = 8;
constexpr uint64_t kTunedStream = uint64_t(1) << 40, kFactorStream = uint64_t(1) << 41;

// Moves one BF16 matrix [O, I] (starting at global element `offset`) by U·Vᵀ + noise, where U
// [O, r] and V [I, r] hold uniform entries of amplitude 0.0326 (so the product has std ≈ 0.001)
// and the noise is uniform with std 0.0005.
void add_structured_delta(uint16_t* w, int64_t O, int64_t I, uint64_t offset) {
  std::vector<float> vt(size_t(kRank * I));  // Vᵀ [r, I]
  for (int64_t k = 0; k < kRank; ++k)
    for (int64_t i = 0; i < I; ++i)
      vt[size_t(k * I + i)] =
          0.0326f * hashed_uniform(kFactorStream + offset + uint64_t(k * I + i));
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(I));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < O; ++o) {
      std::fill(row.begin(), row.end(), 0.0f);
      for (int64_t k = 0; k < kRank; ++k) {
        const float u = 0.0326f * hashed_uniform(kFactorStream + offset + uint64_t(I * kRank) +
                                                 uint64_t(o * kRank + k));
        const float* v = vt.data() + k * I;
        for (int64_t i = 0; i < I; ++i) row[size_t(i)] += u * v[i];
      }
      uint16_t* out = w + o * I;
      for (int64_t i = 0; i < I; ++i) {
        const float noise = 0.000866f * hashed_uniform(kTunedStream + offset + uint64_t(o * I + i));
        out[i] = f32_to_bf16(bf16_to_f32(out[i]) + row[size_t(i)] + noise);
      }
    }
  }
}

// Writes base and fine-tune (each ~2.2 GB) from one buffer: the base first, then the same
// buffer moved into the fine-tune.
void write_pair(const std::string& base_dir, const std::string& tuned_dir) {
  const LlamaConfig config = bench::tinyllama_config();
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
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      dst[i] = f32_to_bf16(norm ? 1.0f : 0.0346f * hashed_uniform(uint64_t(offset + i)));
    tensors.push_back({s.name, TensorView{DType::BF16, s.shape, dst}});
    offset += n;
  }
  save_checkpoint(base_dir, config, tensors, "", {{"generator", kGenerator + " (base)"}}, true);

  offset = 0;
  for (const TensorSpec& s : specs) {
    const int64_t n = shape_numel(s.shape);
    uint16_t* dst = values.data() + offset;
    if (s.shape.size() == 1) {
      for (int64_t i = 0; i < n; ++i)
        dst[i] = f32_to_bf16(1.0f + 0.01f * hashed_uniform(kTunedStream + uint64_t(offset + i)));
    } else if (is_compressed_weight(s.name)) {
      add_structured_delta(dst, s.shape[0], s.shape[1], uint64_t(offset));
    }
    offset += n;
  }
  save_checkpoint(tuned_dir, config, tensors, "", {{"generator", kGenerator + " (fine-tune)"}},
                  true);
}

bool reusable(const std::string& dir, const std::string& generator) {
  if (!fs::exists(fs::path(dir) / "config.json")) return false;
  try {
    const Checkpoint checkpoint(dir);
    return checkpoint.metadata().count("generator") &&
           checkpoint.metadata().at("generator") == generator;
  } catch (const Error&) {
    return false;
  }
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Reads the files once with plain read() calls into a 1 MiB buffer; returns the bytes read.
int64_t read_loop(const std::vector<std::string>& paths) {
  std::vector<char> buffer(size_t(1) << 20);
  int64_t total = 0;
  for (const std::string& path : paths) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) fail(path, ": cannot open");
    ssize_t got;
    while ((got = ::read(fd, buffer.data(), buffer.size())) > 0) total += got;
    ::close(fd);
    if (got < 0) fail(path, ": read error");
  }
  return total;
}

struct ChildRun {
  std::string out;
  double seconds = 0;      // wall
  double cpu_seconds = 0;  // user + system, all threads
  int64_t max_rss_bytes = 0;
};

double cpu_seconds(const struct rusage& usage) {
  return double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

// CPU time this process has used so far (user + system, all threads).
double own_cpu_seconds() {
  struct rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  return cpu_seconds(usage);
}

// Runs argv as a child process with this environment plus `extra_env` ("NAME=value"), capturing
// stdout; its peak RSS comes from wait4().
ChildRun run_child(const std::vector<std::string>& argv,
                   const std::vector<std::string>& extra_env = {}) {
  std::vector<char*> env;  // the extras first: getenv() takes the first of a name
  for (const std::string& variable : extra_env) env.push_back(const_cast<char*>(variable.c_str()));
  for (char** variable = environ; *variable; ++variable) env.push_back(*variable);
  env.push_back(nullptr);
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) fail("pipe failed");
  const auto start = Clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) fail("fork failed");
  if (pid == 0) {
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execve(args[0], args.data(), env.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  ChildRun run;
  char buffer[4096];
  ssize_t got;
  while ((got = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0)
    run.out.append(buffer, size_t(got));
  ::close(pipe_fds[0]);
  int status = 0;
  struct rusage usage;
  ::wait4(pid, &status, 0, &usage);
  run.seconds = seconds_since(start);
  run.max_rss_bytes = int64_t(usage.ru_maxrss) * 1024;
  run.cpu_seconds = cpu_seconds(usage);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail(argv[0], " failed (see stderr above)");
  return run;
}

struct Timing {
  double seconds = 0, cpu_seconds = 0;
};

// Both fingerprints at once, one thread each, bypassing the cache: the least time a compressor
// that hashes both models can take, since SHA-256 is one sequential stream per model.
Timing fingerprint_floor(const std::string& base_dir, const std::string& tuned_dir) {
  const auto start = Clock::now();
  const double cpu_start = own_cpu_seconds();
  auto hash = [](const std::string& dir) { return fingerprint_tensors(Checkpoint(dir).tensors()); };
  std::string base_fingerprint;
  std::thread base_thread([&] { base_fingerprint = hash(base_dir); });
  const std::string tuned_fingerprint = hash(tuned_dir);
  base_thread.join();
  return {seconds_since(start), own_cpu_seconds() - cpu_start};
}

// The times of one kind of compression run, over the rounds.
struct CompressRuns {
  std::vector<double> seconds, cpu_seconds, stream_seconds;
  int64_t max_rss_bytes = 0;
  nlohmann::json last;  // the CLI's --json report of the last run

  void add(const ChildRun& run) {
    seconds.push_back(run.seconds);
    cpu_seconds.push_back(run.cpu_seconds);
    max_rss_bytes = std::max(max_rss_bytes, run.max_rss_bytes);
    last = nlohmann::json::parse(run.out);
    stream_seconds.push_back(last["compress_seconds"].get<double>());
  }
  // Fails unless the last run found in the cache the fingerprints it was meant to, no more.
  void expect_cached(bool base, bool finetune, const char* what) const {
    const nlohmann::json& flags = last["fingerprints_cached"];
    if (flags["base"] != base || flags["finetune"] != finetune)
      fail(what, " compression: fingerprints_cached is ", flags.dump(), ", expected base ", base,
           ", finetune ", finetune);
  }
  // The median of each round's time over that round's read loop: steadier than a ratio of
  // medians when the load of the shared machine changes between rounds.
  double over_read(const std::vector<double>& read_seconds) const {
    std::vector<double> ratios;
    for (size_t i = 0; i < seconds.size(); ++i) ratios.push_back(seconds[i] / read_seconds[i]);
    return median(ratios);
  }
  nlohmann::json summary(const std::vector<double>& read_seconds) const {
    return {{"seconds", median(seconds)},
            {"cpu_seconds", median(cpu_seconds)},
            {"stream_seconds", median(stream_seconds)},
            {"over_read", over_read(read_seconds)},
            {"peak_rss_bytes", max_rss_bytes},
            {"all_seconds", seconds}};
  }
};

// Counts the differences between our adapter and the PyTorch one: sign bytes and exact deltas
// bit for bit, scales to 1e-5 relative; tensors missing on either side count as different.
nlohmann::json compare_adapters(const std::string& ours_path, const std::string& theirs_path) {
  const SafetensorsFile ours(ours_path), theirs(theirs_path);
  int64_t sign_bytes = 0, delta_bytes = 0, scales = 0, missing = 0;
  double worst_scale = 0;
  for (const std::string& name : ours.names()) {
    const TensorView& a = ours.get(name);
    const TensorView* b = theirs.find(name);
    if (!b || b->bytes() != a.bytes() || b->dtype != a.dtype) {
      ++missing;
      continue;
    }
    const uint8_t *x = a.as<uint8_t>(), *y = b->as<uint8_t>();
    if (name.ends_with(".scale")) {
      for (int64_t i = 0; i < a.numel(); ++i) {
        const double s = a.as<float>()[i], t = b->as<float>()[i];
        const double error = std::fabs(s - t) / std::max(std::fabs(s), 1e-30);
        worst_scale = std::max(worst_scale, error);
        scales += error > 1e-5;
      }
    } else {
      int64_t& count = name.ends_with(".sign") ? sign_bytes : delta_bytes;
      for (size_t i = 0; i < a.bytes(); ++i) count += x[i] != y[i];
    }
  }
  missing += int64_t(theirs.names().size()) - int64_t(ours.names().size());
  return {{"differing_sign_bytes", sign_bytes},
          {"differing_delta_bytes", delta_bytes},
          {"scales_beyond_1e-5", scales},
          {"worst_scale_relative_difference", worst_scale},
          {"missing_or_extra_tensors", missing}};
}

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  set_threads(o.threads);
  const int threads = num_threads();
  const std::string base_dir = o.dir + "/base", tuned_dir = o.dir + "/finetune";
  if (!reusable(base_dir, kGenerator + " (base)") ||
      !reusable(tuned_dir, kGenerator + " (fine-tune)")) {
    std::cerr << "writing the random 1.1B BF16 pair to " << o.dir << " ...\n";
    write_pair(base_dir, tuned_dir);
    // Files written moments ago are not cached (the racy-clean rule): let the pair settle.
    std::this_thread::sleep_for(kRacyWindow);
  }
  const std::vector<std::string> files = {base_dir + "/model.safetensors",
                                          tuned_dir + "/model.safetensors"};
  const std::string adapter = o.dir + "/bitdelta.bitdelta",
                    warm_adapter = o.dir + "/bitdelta-warm.bitdelta",
                    torch_adapter = o.dir + "/torch.bitdelta";
  // The compressions' fingerprint cache: this benchmark's own, so that it decides what is cached.
  const std::string cache_dir = o.dir + "/fingerprint-cache";
  ::setenv("BITDELTA_CACHE_DIR", cache_dir.c_str(), 1);
  ::unsetenv("BITDELTA_NO_FINGERPRINT_CACHE");
  // A cache holding the base's fingerprint alone, copied afresh for each new-fine-tune run (d).
  const std::string base_only_seed = o.dir + "/fingerprint-cache-base-only",
                    base_only = o.dir + "/fingerprint-cache-new-finetune";
  fs::remove_all(base_only_seed);
  ::setenv("BITDELTA_CACHE_DIR", base_only_seed.c_str(), 1);
  std::cerr << "fingerprinting the base into a cache of its own ...\n";
  Checkpoint(base_dir).fingerprint();
  ::setenv("BITDELTA_CACHE_DIR", cache_dir.c_str(), 1);

  std::cerr << "warming the page cache ...\n";
  const int64_t input_bytes = read_loop(files);
  std::vector<double> read_seconds, read_cpu_seconds;
  CompressRuns cold, warm, new_finetune;
  auto compress = [&](const std::string& out, const std::vector<std::string>& env = {}) {
    return run_child({o.bitdelta, "compress", "--base", base_dir, "--finetuned", tuned_dir, "-o",
                      out, "--force", "--json", "--threads", std::to_string(threads)},
                     env);
  };
  for (int run = 0; run < o.runs; ++run) {
    std::cerr << "run " << run + 1 << "/" << o.runs
              << ": read loop; bitdelta compress cold, warm, new fine-tune ...\n";
    const auto start = Clock::now();
    const double cpu_start = own_cpu_seconds();
    read_loop(files);
    read_seconds.push_back(seconds_since(start));
    read_cpu_seconds.push_back(own_cpu_seconds() - cpu_start);
    fs::remove_all(cache_dir);
    cold.add(compress(adapter));
    cold.expect_cached(false, false, "cold");
    warm.add(compress(warm_adapter));
    warm.expect_cached(true, true, "warm");
    fs::remove_all(base_only);
    fs::copy(base_only_seed, base_only, fs::copy_options::recursive);
    new_finetune.add(compress(warm_adapter, {"BITDELTA_CACHE_DIR=" + base_only}));
    new_finetune.expect_cached(true, false, "new fine-tune");
  }
  const nlohmann::json warm_agreement = compare_adapters(adapter, warm_adapter);
  const bool warm_same_fingerprints =
      warm.last["base_fingerprint"] == cold.last["base_fingerprint"] &&
      warm.last["finetune_fingerprint"] == cold.last["finetune_fingerprint"];
  fs::remove(warm_adapter);
  std::cerr << "fingerprinting both checkpoints on two threads ...\n";
  const Timing floor = fingerprint_floor(base_dir, tuned_dir);

  const nlohmann::json& report_json = cold.last;
  const double read_s = median(read_seconds), compress_s = median(cold.seconds),
               warm_s = median(warm.seconds);
  nlohmann::json report = {
      {"threads", threads},
      {"input_bytes", input_bytes},
      {"runs", o.runs},
      {"read_loop_seconds", read_s},
      {"read_loop_cpu_seconds", median(read_cpu_seconds)},
      {"read_loop_GBps", input_bytes / read_s / 1e9},
      {"compress_seconds", compress_s},
      {"compress_cpu_seconds", median(cold.cpu_seconds)},
      {"compress_stream_seconds", median(cold.stream_seconds)},
      {"compress_over_read", cold.over_read(read_seconds)},
      {"compress_peak_rss_bytes", cold.max_rss_bytes},
      {"cold", cold.summary(read_seconds)},
      {"warm", warm.summary(read_seconds)},
      {"new_finetune", new_finetune.summary(read_seconds)},
      {"warm_agreement", warm_agreement},
      {"warm_same_fingerprints", warm_same_fingerprints},
      {"fingerprint_floor_seconds", floor.seconds},
      {"fingerprint_floor_cpu_seconds", floor.cpu_seconds},
      {"adapter_bytes", report_json["adapter_bytes"]},
      {"ratio_compressed_vs_fp16", report_json["ratio_compressed_vs_fp16"]},
      {"ratio_changed_vs_fp16", report_json["ratio_changed_vs_fp16"]},
      {"ratio_finetune_file", report_json["ratio_finetune_file"]},
      {"all_read_seconds", read_seconds},
      {"load_average", load_average()},
  };
  std::printf("threads %d, %.2f GB of input (both BF16 checkpoints), page cache warm\n", threads,
              input_bytes / 1e9);
  std::printf(
      "load average %s when done (other jobs share the cores); ratios to the read loop "
      "are medians of each round's\n",
      load_average().c_str());
  std::printf("read loop          %6.2f s  %5.2f GB/s, %.2f s CPU\n", read_s,
              input_bytes / read_s / 1e9, median(read_cpu_seconds));
  std::printf(
      "compress, cold     %6.2f s  %5.2fx the read loop, %.2f s CPU, peak RSS %.0f MiB "
      "(streaming part %.2f s; both models hashed)\n",
      compress_s, cold.over_read(read_seconds), median(cold.cpu_seconds),
      cold.max_rss_bytes / 1048576.0, median(cold.stream_seconds));
  std::printf(
      "compress, warm     %6.2f s  %5.2fx the read loop, %.2f s CPU, peak RSS %.0f MiB "
      "(streaming part %.2f s; both fingerprints cached)\n",
      warm_s, warm.over_read(read_seconds), median(warm.cpu_seconds),
      warm.max_rss_bytes / 1048576.0, median(warm.stream_seconds));
  std::printf(
      "compress, new f-t  %6.2f s  %5.2fx the read loop, %.2f s CPU (base cached, fine-tune "
      "hashed)\n",
      median(new_finetune.seconds), new_finetune.over_read(read_seconds),
      median(new_finetune.cpu_seconds));
  std::printf("warm adapter vs cold: %s, same fingerprints: %s\n", warm_agreement.dump().c_str(),
              warm_same_fingerprints ? "yes" : "NO");
  std::printf(
      "fingerprint floor  %6.2f s  %5.2fx the read loop, %.2f s CPU (both SHA-256 "
      "fingerprints, one thread each)\n",
      floor.seconds, floor.seconds / read_s, floor.cpu_seconds);
  std::printf(
      "adapter %.1f MB: %.2fx vs fp16 of the compressed weights, %.2fx vs fp16 of all "
      "that changed, %.2fx vs the fine-tune's file\n",
      report_json["adapter_bytes"].get<double>() / 1e6,
      report_json["ratio_compressed_vs_fp16"].get<double>(),
      report_json["ratio_changed_vs_fp16"].get<double>(),
      report_json["ratio_finetune_file"].get<double>());

  if (o.torch) {
    std::cerr << "compressing with PyTorch ...\n";
    const ChildRun torch =
        run_child({"/usr/bin/python3", o.torch_script, "--base", base_dir, "--finetuned", tuned_dir,
                   "-o", torch_adapter, "--threads", std::to_string(threads)});
    const nlohmann::json torch_json = nlohmann::json::parse(torch.out);
    const nlohmann::json agreement = compare_adapters(adapter, torch_adapter);
    const bool same_fingerprints =
        torch_json["base_fingerprint"] == report_json["base_fingerprint"] &&
        torch_json["finetune_fingerprint"] == report_json["finetune_fingerprint"];
    report["torch"] = torch_json;
    report["torch"]["wall_seconds"] = torch.seconds;
    report["torch"]["peak_rss_bytes"] = torch.max_rss_bytes;
    report["torch"]["cpu_seconds"] = torch.cpu_seconds;
    report["torch_over_bitdelta"] = torch.seconds / compress_s;
    report["torch_over_bitdelta_warm"] = torch.seconds / warm_s;
    report["agreement"] = agreement;
    report["agreement"]["same_fingerprints"] = same_fingerprints;
    std::printf(
        "PyTorch            %6.2f s  %5.2fx bitdelta, %.2f s CPU, peak RSS %.0f MiB "
        "(torch %s)\n",
        torch.seconds, torch.seconds / compress_s, torch.cpu_seconds,
        torch.max_rss_bytes / 1048576.0, torch_json["version"].get<std::string>().c_str());
    std::printf("adapters agree: %s\n", agreement.dump().c_str());
    fs::remove(torch_adapter);
  }
  std::printf("%s\n", report.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace bd

int main(int argc, char** argv) {
  return bd::bench::guarded_main("compress_bench", bd::run, argc, argv);
}
