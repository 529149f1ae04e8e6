// Multi-user serving on the 1.1B-parameter Llama shape (random BF16 weights) with random 1-bit
// adapters, every limit measured in the same run (docs/serving.md has the results).
//
//   build/serve_bench [--threads N] [--dir DIR] [--users 1,4,16,64] [--steps S] [--rounds R]
//                     [--merge-users LIST] [--resident-tokens T] [--resident-registered LIST]
//                     [--resident-in-flight LIST] [--skip-scaling] [--no-amx]
//
// DIR (default /tmp/bitdelta-decode-bench-1.1b, shared with decode_bench) receives, once: the
// random checkpoint (~2.2 GB) with a tokenizer.json, 64 random adapters (~130 MB each: a sign
// bit per weight of every block linear, one scale per matrix) and folders registering 5, 2,000
// and 10,000 adapter names (hard links to the 64 files: the bytes read per step are the same as
// with distinct files, since every adapter is far larger than the caches). Then:
//   1. limits: read bandwidth of main memory and the GEMM FLOP rate: the fastest of OpenBLAS
//      SGEMM (2048³, F32), our own tiled matmul (2048 × 2048 F32 weights, 256 tokens), which on
//      some machines outruns OpenBLAS, and, on CPUs with AMX, our BF16 product of 64 tokens on
//      its tiles: a limit that a kernel beats is no limit;
//   2. decode, N users each with their own adapter (fused: one base product + one sign product
//      per user per step) and the base alone, alternating for R rounds (medians of the rounds
//      and of the per-round fused/base ratios), and merge-on-switch (the user's dense weights
//      materialised whenever the batch changes user, then one token); tokens/s against the
//      roofline max((base bytes + N × adapter bytes) ÷ bandwidth, N × 2 × params ÷ FLOP rate);
//      with N = 16, also the 16 sequences sharing 5 adapters (as with 5 registered in part 3),
//      alternating with 16 distinct: the roofline's N counts distinct adapters;
//   3. resident adapters: engine throughput with batches of 16 cycling through 5, 16, then 2,000
//      registered adapters (the cache bounded to 64 adapters' bytes, so it evicts), with 16
//      requests in flight (each client waits for its answer: a cold adapter's load leaves its
//      slot empty) and with 24 (8 queued, as in a server with more clients than slots: the queue
//      loads its adapters while it waits); each in two phases of 96 requests on one engine: the
//      cache filling from empty, then cycling (with 2,000, every load evicts an adapter), and
//      the loader thread's time per load; each request generates T tokens (--resident-tokens,
//      default 16; --resident-registered and --resident-in-flight pick other cases). Each phase's
//      steps against their bandwidth floor: steps × (base bytes + distinct adapters per step ×
//      adapter bytes) ÷ bandwidth;
//   4. switching: AdapterCache::get of a resident adapter (p50, p99) and the decode step time
//      alternating two adapters against staying on one;
//   5. cold load of an adapter evicted from the page cache (the cache reads every page in), against
//      its size ÷ disk bandwidth;
//   6. memory: RSS with 10,000 adapters registered and 64 loaded and read.
// --no-amx turns the AMX path off (kernels/matmul_amx.h): the same machine without it.
// Prints a table per part and one JSON line with every number.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/atomic_file.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/threads.h"
#include "hwy/aligned_allocator.h"
#include "io/adapter.h"
#include "io/checkpoint.h"
#include "kernels/blas.h"
#include "kernels/matmul.h"
#include "kernels/matmul_amx.h"
#include "kernels/matmul_panels.h"
#include "kernels/membw.h"
#include "kernels/sign_matmul.h"
#include "kernels/sign_pack.h"
#include "model/byte_tokenizer.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model/tokenizer.h"
#include "serve/adapter_cache.h"
#include "serve/engine.h"
#include "util/bench_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using bench::median;
using bench::percentile;
using json = nlohmann::json;

constexpr int kDistinctAdapters = 64;
constexpr int64_t kPrompt = 8;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> values;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) values.push_back(std::stoi(item));
  return values;
}

struct Options {
  int threads = 0;
  std::string dir = (fs::temp_directory_path() / "bitdelta-decode-bench-1.1b").string();
  std::vector<int> users = {1, 4, 16, 64};
  std::vector<int> merge_users = {1, 4, 16};
  int steps = 8;
  int rounds = 3;
  int resident_tokens = 16;  // generated per request in part 3
  std::vector<int> resident_registered = {5, 16, 2000};
  std::vector<int> resident_in_flight = {16, 24};
  bool scaling = true;
  bool amx = true;
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
    else if (flag == "--users")
      o.users = parse_list(value());
    else if (flag == "--merge-users")
      o.merge_users = parse_list(value());
    else if (flag == "--steps")
      o.steps = std::stoi(value());
    else if (flag == "--rounds")
      o.rounds = std::stoi(value());
    else if (flag == "--resident-tokens")
      o.resident_tokens = std::stoi(value());
    else if (flag == "--resident-registered")
      o.resident_registered = parse_list(value());
    else if (flag == "--resident-in-flight")
      o.resident_in_flight = parse_list(value());
    else if (flag == "--skip-scaling")
      o.scaling = false;
    else if (flag == "--no-amx")
      o.amx = false;
    else
      fail("unknown option ", flag, " (see the comment at the top of bench/serve_bench.cpp)");
  }
  for (int n : o.users)
    if (n < 1 || n > kDistinctAdapters) fail("--users: each N must be in [1, 64]");
  if (o.steps < 2) fail("--steps must be >= 2");
  if (o.rounds < 1) fail("--rounds must be >= 1");
  if (o.resident_tokens < 1 || o.resident_tokens > 512)
    fail("--resident-tokens must be in [1, 512]");
  for (int n : o.resident_registered)
    if (n < 1 || n > 10000) fail("--resident-registered: each count must be in [1, 10000]");
  for (int n : o.resident_in_flight)
    if (n < 1 || n > 256) fail("--resident-in-flight: each count must be in [1, 256]");
  return o;
}

// ---- setup: tokenizer, adapters, registration folders ----

// The byte tokenizer with the rest of the 32,000 ids as tokens "w<id>", so that any id a random
// model picks has text.
void write_tokenizer(const std::string& dir, int64_t vocab) {
  const std::string path = dir + "/tokenizer.json";
  if (fs::exists(path)) return;
  nlohmann::ordered_json t = nlohmann::ordered_json::parse(byte_tokenizer_json());
  for (int64_t id = kByteVocabSize; id < vocab; ++id)
    t["model"]["vocab"]["w" + std::to_string(id)] = id;
  write_file_atomic(path, t.dump() + "\n", false);
}

// Random adapter `index`: signs from a hash, one scale per matrix (1e-3).
void write_random_adapter(const std::string& path, const Checkpoint& base, uint64_t index) {
  AdapterInfo info;
  info.base_fingerprint = base.fingerprint();
  info.finetune_fingerprint = std::string(63, 'a') + char('0' + index % 10);
  info.scale_mode = "mean";
  info.granularity = "matrix";
  info.tool_version = "serve_bench";
  info.created = "2026-12-02T00:00:00Z";
  info.owner = "did:lux:bench" + std::to_string(index);
  std::vector<AdapterMatrix> matrices;
  std::vector<std::vector<uint8_t>> signs;
  std::vector<float> scales;
  const LlamaConfig& c = base.config();
  std::vector<TensorSpec> specs;
  for (const TensorSpec& s : llama_tensor_specs(c))
    if (s.name.rfind("model.layers.", 0) == 0 && s.shape.size() == 2) specs.push_back(s);
  signs.resize(specs.size());
  scales.assign(specs.size(), 1e-3f);
  uint64_t counter = index << 40;
  for (size_t m = 0; m < specs.size(); ++m) {
    const int64_t O = specs[m].shape[0], I = specs[m].shape[1], row = sign_row_bytes(I);
    signs[m].resize(size_t(O * row));
    const uint64_t first = counter;
#pragma omp parallel for
    for (int64_t b = 0; b < O * row; ++b)
      signs[m][size_t(b)] = uint8_t(int(128 * (bench::hashed_uniform(first + uint64_t(b)) + 1)));
    counter += uint64_t(O * row);
    if (I % 8)  // padding bits of each row stay 0
      for (int64_t o = 0; o < O; ++o)
        signs[m][size_t(o * row + row - 1)] &= uint8_t((1u << (I % 8)) - 1);
    matrices.push_back(AdapterMatrix{specs[m].name, O, I,
                                     TensorView{DType::U8, {O, row}, signs[m].data()},
                                     TensorView{DType::F32, {1}, &scales[m]}});
  }
  write_adapter(path, info, matrices, {}, /*overwrite=*/true);
}

std::string adapter_file(const std::string& dir, int index) {
  char name[32];
  std::snprintf(name, sizeof name, "u%02d.bitdelta", index);
  return dir + "/adapters/" + name;
}

// A folder of `count` adapter names (r00000 ...), hard links to the 64 files, round robin.
std::string registration_folder(const std::string& dir, int count) {
  const std::string folder = dir + "/registered-" + std::to_string(count);
  if (fs::exists(folder + "/complete")) return folder;
  fs::remove_all(folder);
  fs::create_directories(folder);
  for (int i = 0; i < count; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "r%05d.bitdelta", i);
    fs::create_hard_link(adapter_file(dir, i % kDistinctAdapters), folder + "/" + name);
  }
  write_file_atomic(folder + "/complete", "ok\n", false);
  return folder;
}

void ensure_adapters(const std::string& dir, const Checkpoint& base) {
  if (fs::exists(dir + "/adapters/complete")) return;
  fs::create_directories(dir + "/adapters");
  for (int i = 0; i < kDistinctAdapters; ++i) {
    std::cerr << "\rwriting random adapter " << i + 1 << " of " << kDistinctAdapters << std::flush;
    write_random_adapter(adapter_file(dir, i), base, uint64_t(i + 1));
  }
  std::cerr << "\n";
  write_file_atomic(dir + "/adapters/complete", "ok\n", false);
}

// ---- limits ----

struct GemmRates {
  double sgemm = 0, tiled = 0, panels = 0, amx = 0;  // FLOP/s (0: not used on this machine)
  double best() const { return std::max({sgemm, tiled, panels, amx}); }
};

GemmRates measure_gemm_flops() {
  const int64_t n = 2048, tokens = 256;
  std::vector<float> a(size_t(n * n), 0.5f), b(a.size(), 0.25f), c(a.size());
  // Our panel product on the same matrix in BF16, where the server uses it.
  std::vector<uint16_t> b16(b.size());
  from_f32(DType::BF16, b.data(), b16.data(), b.size());
  const TensorView b16_view{DType::BF16, {n, n}, b16.data()};
  const auto panels = hwy::AllocateAligned<uint32_t>(size_t(panel_bytes(n, n)) / 4);
  pack_panels(b16_view, panels.get());
  GemmRates rates;
  for (int r = 0; r < 3; ++r) {
    if (panels_preferred()) {
      const auto start = Clock::now();
      matmul_panels(c.data(), a.data(), panels.get(), n, n, tokens, false);
      rates.panels = std::max(rates.panels, 2.0 * double(n * n * tokens) / seconds_since(start));
    }
    auto start = Clock::now();
    sgemm("serve_bench", CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
          c.data(), n);
    rates.sgemm = std::max(rates.sgemm, 2.0 * double(n * n * n) / seconds_since(start));
    start = Clock::now();
    matmul(c.data(), a.data(), TensorView{DType::F32, {n, n}, b.data()}, tokens);
    rates.tiled = std::max(rates.tiled, 2.0 * double(n * n * tokens) / seconds_since(start));
    if (amx_available() && amx_enabled()) {
      start = Clock::now();
      matmul(c.data(), a.data(), b16_view, kAmxPassTokens);
      rates.amx = std::max(rates.amx, 2.0 * double(n * n * kAmxPassTokens) / seconds_since(start));
    }
  }
  return rates;
}

// ---- decode ----

// Median seconds of a decode step for len(deltas) sequences, one per delta (nullptr: base),
// after a prefill of kPrompt tokens each and one untimed decode step.
double fused_step_seconds(const LlamaWeights& w, const std::vector<const LlamaDelta*>& deltas,
                          int steps) {
  const int64_t N = int64_t(deltas.size()), V = w.config.vocab_size;
  KVBlockPool pool(w.config, N * ((kPrompt + steps + 1 + kKVBlockSize) / kKVBlockSize + 1));
  StepScratch scratch;
  std::vector<KVSequence> kv(static_cast<size_t>(N));
  std::vector<std::vector<int32_t>> tokens(static_cast<size_t>(N));
  std::vector<std::vector<float>> logits(static_cast<size_t>(N),
                                         std::vector<float>(static_cast<size_t>(V)));
  std::vector<StepSequence> step(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t t = 0; t < kPrompt; ++t)
      tokens[size_t(i)].push_back(int32_t((i * 131 + t * 7919 + 1) % V));
    pool.reserve(kv[size_t(i)], kPrompt + steps + 2);
  }
  std::vector<double> seconds;
  for (int s = -2; s < steps; ++s) {  // untimed: the prefill and one decode step (first touches)
    for (int64_t i = 0; i < N; ++i) {
      const size_t u = size_t(i);
      step[u] = StepSequence{.tokens = tokens[u].data() + kv[u].pos,
                             .n = int64_t(tokens[u].size()) - kv[u].pos,
                             .kv = &kv[u],
                             .delta = deltas[u],
                             .logits = logits[u].data()};
    }
    const auto start = Clock::now();
    forward_step(w, pool, step, scratch);
    if (s >= 0) seconds.push_back(seconds_since(start));
    for (int64_t i = 0; i < N; ++i)
      tokens[size_t(i)].push_back(argmax(logits[size_t(i)].data(), V));
  }
  return median(seconds);
}

// Tokens/s of two sets of sequences (their adapters; nullptr: the base), alternating round after
// round, since the shared host moves the speed of both by ±20% within minutes; the ratios are
// taken per round.
struct AlternatedDecode {
  std::vector<double> first, second, first_over_second;  // one entry per round
};
AlternatedDecode alternated_decode(const LlamaWeights& w,
                                   const std::vector<const LlamaDelta*>& first,
                                   const std::vector<const LlamaDelta*>& second, int steps,
                                   int rounds) {
  AlternatedDecode out;
  for (int r = 0; r < rounds; ++r) {
    out.first.push_back(double(first.size()) / fused_step_seconds(w, first, steps));
    out.second.push_back(double(second.size()) / fused_step_seconds(w, second, steps));
    out.first_over_second.push_back(out.first.back() / out.second.back());
  }
  return out;
}

// Merge-on-switch: one BF16 copy of the block linears; serving user u means writing
// W_base + γ_u ⊙ S_u into it, then decoding u's next token. Returns seconds per round (one token
// for each of the users).
double merge_round_seconds(const LlamaWeights& base, const std::vector<const AdapterFile*>& users,
                           int rounds) {
  LlamaWeights merged = base;
  std::vector<Linear*> linears;
  for (LayerWeights& l : merged.layers)
    for (Linear* m : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) linears.push_back(m);
  int64_t total = 0;
  for (Linear* m : linears) total += m->weight.numel();
  std::vector<uint16_t> dense(static_cast<size_t>(total));
  std::vector<const void*> base_data;
  int64_t offset = 0;
  for (Linear* m : linears) {
    base_data.push_back(m->weight.data);
    m->weight.data = dense.data() + offset;
    m->panels = nullptr;  // the base's, not the merged weights
    offset += m->weight.numel();
  }
  auto merge = [&](const AdapterFile& adapter) {
    for (size_t i = 0; i < linears.size(); ++i) {
      const AdapterMatrix* a = adapter.find_matrix(linears[i]->name);
      add_scaled_signs(DType::BF16, base_data[i], a->sign.as<uint8_t>(), a->scale.as<float>(),
                       a->per_row(), a->out, a->in, DType::BF16,
                       const_cast<void*>(linears[i]->weight.data));
    }
  };
  const int64_t V = base.config.vocab_size;
  std::vector<KVCache> caches;
  for (size_t u = 0; u < users.size(); ++u) caches.emplace_back(base.config, kPrompt + rounds + 2);
  std::vector<float> logits(static_cast<size_t>(V));
  std::vector<int32_t> next(users.size());
  for (size_t u = 0; u < users.size(); ++u) {  // prefill, untimed
    merge(*users[u]);
    std::vector<int32_t> prompt;
    for (int64_t t = 0; t < kPrompt; ++t) prompt.push_back(int32_t((u * 131 + t * 7919 + 1) % V));
    forward(merged, caches[u], prompt.data(), kPrompt, logits.data());
    next[u] = argmax(logits.data(), V);
  }
  std::vector<double> seconds;
  for (int r = 0; r < rounds; ++r) {
    const auto start = Clock::now();
    for (size_t u = 0; u < users.size(); ++u) {
      merge(*users[u]);
      forward(merged, caches[u], &next[u], 1, logits.data());
      next[u] = argmax(logits.data(), V);
    }
    seconds.push_back(seconds_since(start));
  }
  return median(seconds);
}

// ---- engine throughput with many registered adapters ----

struct EngineRun {
  double tokens_per_s = 0;
  int64_t tokens = 0, requests = 0, loads = 0, evictions = 0;
  int64_t steps = 0;
  double mean_batch = 0, step_seconds = 0, seconds = 0;  // step_seconds: in forward steps
  double mean_adapters = 0;  // distinct adapters per step: each streams its own signs
  double load_seconds = 0;   // the loader thread's, in loads
};

// `requests` requests of `max_tokens` greedy tokens, each for the next adapter name after
// `first` (round robin), from `in_flight` clients that each wait for their answer before sending
// the next. What it reports is this phase's share of the engine's and the cache's counters.
EngineRun engine_phase(Engine& engine, const Metrics& metrics, const AdapterCache& adapters,
                       const std::vector<std::string>& names, int first, int requests,
                       int in_flight, const std::vector<int32_t>& prompt, int64_t max_tokens) {
  const int64_t steps_before = metrics.step_seconds.count();
  const double step_sum_before = metrics.step_seconds.sum();
  const double batch_sum_before = metrics.batch_size.sum();
  const double adapters_sum_before = metrics.step_adapters.sum();
  const AdapterCacheStats stats_before = adapters.stats();
  std::atomic<int> next{0};
  std::atomic<int64_t> tokens{0};
  const auto start = Clock::now();
  std::vector<std::thread> slots;
  for (int s = 0; s < in_flight; ++s)
    slots.emplace_back([&] {
      for (int r; (r = next++) < requests;) {
        GenerationRequest request;
        request.model = names[size_t(first + r) % names.size()];
        request.prompt = prompt;
        request.max_tokens = max_tokens;
        request.sampling.temperature = 0;
        std::shared_ptr<Generation> g = engine.submit(request);
        Generation::Update u;
        do u = g->next();
        while (!u.finished);
        if (!u.error.empty()) fail("engine request failed: ", u.error);
        tokens += u.completion_tokens;
      }
    });
  for (std::thread& t : slots) t.join();
  EngineRun run;
  run.seconds = seconds_since(start);
  run.tokens = tokens;
  run.requests = requests;
  run.tokens_per_s = double(tokens) / run.seconds;
  run.steps = metrics.step_seconds.count() - steps_before;
  run.step_seconds = metrics.step_seconds.sum() - step_sum_before;
  run.mean_batch =
      (metrics.batch_size.sum() - batch_sum_before) / double(std::max<int64_t>(1, run.steps));
  run.mean_adapters =
      (metrics.step_adapters.sum() - adapters_sum_before) / double(std::max<int64_t>(1, run.steps));
  const AdapterCacheStats stats = adapters.stats();
  run.loads = stats.loads - stats_before.loads;
  run.evictions = stats.evictions - stats_before.evictions;
  run.load_seconds = stats.load_seconds - stats_before.load_seconds;
  return run;
}

// Two phases of `requests` requests on one engine and one adapter cache: the first fills the
// cache from empty (a server's start: with many adapters, every load also takes fresh memory for
// its transposed signs); the second runs on with the next adapter names, so that with more
// adapters than the cache holds every load evicts one and reuses its memory — the cache cycling.
std::pair<EngineRun, EngineRun> engine_throughput(const Checkpoint& checkpoint,
                                                  const LlamaWeights& weights,
                                                  const Tokenizer& tokenizer,
                                                  const std::string& folder, int batch,
                                                  int in_flight, int requests, int64_t max_tokens,
                                                  int64_t cache_bytes) {
  AdapterCache adapters(checkpoint, weights, folder,
                        AdapterCacheOptions{.max_count = 10000, .max_bytes = cache_bytes});
  const std::vector<std::string> names = adapters.list();
  Metrics metrics;
  Engine engine(weights, tokenizer, adapters, metrics,
                EngineOptions{.max_batch = batch, .kv_blocks = 4096});
  engine.start();
  const std::vector<int32_t> prompt = tokenizer.encode("The serving benchmark", true);
  const EngineRun fill =
      engine_phase(engine, metrics, adapters, names, 0, requests, in_flight, prompt, max_tokens);
  const EngineRun cycling = engine_phase(engine, metrics, adapters, names, requests, requests,
                                         in_flight, prompt, max_tokens);
  return {fill, cycling};
}

// ---- memory and files ----

// Drops a file's pages from the page cache (it must not be mapped anywhere).
void evict_from_page_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("cannot open ", path);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

double disk_read_bandwidth(const std::string& path) {
  evict_from_page_cache(path);
  const int fd = ::open(path.c_str(), O_RDONLY);
  std::vector<char> buffer(size_t(8) << 20);
  const auto start = Clock::now();
  int64_t total = 0;
  for (ssize_t got; (got = ::read(fd, buffer.data(), buffer.size())) > 0;) total += got;
  ::close(fd);
  return double(total) / seconds_since(start);
}

// Reads every sign byte of an adapter (what its first decode step does).
// Reads a byte of every page of what steps read of an adapter: its transposed signs where the
// cache made them, else the signs in its file.
uint64_t touch(const ServedAdapter& adapter) {
  uint64_t sum = 0;
  if (adapter.sign_tiles) {
    const int64_t tile_bytes = adapter.bytes - int64_t(fs::file_size(adapter.file->path()));
    for (int64_t i = 0; i < tile_bytes; i += 4096) sum += adapter.sign_tiles[size_t(i)];
    return sum;
  }
  for (const AdapterMatrix& m : adapter.file->matrices()) {
    const uint8_t* bits = m.sign.as<uint8_t>();
    for (size_t i = 0; i < m.sign.bytes(); i += 4096) sum += bits[i];
  }
  return sum;
}

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  set_threads(o.threads);
  set_amx_enabled(o.amx);
  const int threads = num_threads();
  json out = {{"threads", threads}, {"load_average_before", bench::load_average()}};

  bench::ensure_random_checkpoint(o.dir);
  const Checkpoint checkpoint(o.dir);
  write_tokenizer(o.dir, checkpoint.config().vocab_size);
  ensure_adapters(o.dir, checkpoint);
  LlamaWeights weights = weights_from_checkpoint(checkpoint);
  copy_linears_for_decode(weights);  // as bitdelta serve does
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer_for_model(o.dir);

  // The users' adapters as the server holds them: loaded by its adapter cache (which also
  // transposes their signs for the lookup kernel where this CPU has one).
  std::vector<std::shared_ptr<const ServedAdapter>> served;
  {
    AdapterCache cache(checkpoint, weights, fs::path(adapter_file(o.dir, 0)).parent_path());
    for (int i = 0; i < kDistinctAdapters; ++i)
      served.push_back(cache.load_now(fs::path(adapter_file(o.dir, i)).stem().string()));
  }
  const double base_bytes = bench::weight_bytes_per_token(weights);
  const double adapter_bytes = double(fs::file_size(adapter_file(o.dir, 0)));
  const double params = base_bytes / 2;  // BF16: every weight a token reads, once
  out["base_bytes_per_token"] = base_bytes;
  out["adapter_bytes"] = adapter_bytes;

  // 1. Limits.
  std::cerr << "limits ...\n";
  const double bandwidth = measure_read_bandwidth(size_t(1) << 30, 3);
  const GemmRates gemm = measure_gemm_flops();
  const double flops = gemm.best();
  out["read_bandwidth_GBps"] = bandwidth / 1e9;
  out["sgemm_GFLOPs"] = gemm.sgemm / 1e9;
  out["tiled_matmul_GFLOPs"] = gemm.tiled / 1e9;
  out["panels_GFLOPs"] = gemm.panels / 1e9;
  out["amx_GFLOPs"] = gemm.amx / 1e9;
  out["amx"] = amx_available() && amx_enabled();
  std::printf(
      "threads %d; read bandwidth %.1f GB/s; GEMM %.1f GFLOP/s (OpenBLAS SGEMM %.1f, our tiles "
      "%.1f, our panels %.1f, our AMX %.1f); base %.2f GB/token, adapter %.1f MB; AMX %s\n",
      threads, bandwidth / 1e9, flops / 1e9, gemm.sgemm / 1e9, gemm.tiled / 1e9, gemm.panels / 1e9,
      gemm.amx / 1e9, base_bytes / 1e9, adapter_bytes / 1e6,
      amx_available() ? (amx_enabled() ? "on" : "off (--no-amx)") : "not on this CPU");

  // 2. Decode. The roofline of N sequences holding `adapters` distinct adapters: each step reads
  // the base and every adapter once, and computes 2 × params FLOPs per sequence.
  auto decode_limit = [&](int N, int adapters) {
    return N /
           std::max((base_bytes + adapters * adapter_bytes) / bandwidth, N * 2 * params / flops);
  };
  std::printf(
      "\n   N  limit tok/s  fused tok/s (of limit)  base tok/s  fused/base  merge tok/s  "
      "fused/merge\n");
  json decode = json::array();
  for (int N : o.users) {
    std::cerr << "decode N=" << N << " ...\n";
    std::vector<const LlamaDelta*> users, none(size_t(N), nullptr);
    for (int i = 0; i < N; ++i) users.push_back(&served[size_t(i)]->delta);
    const double step_bytes = base_bytes + N * adapter_bytes;
    const double limit = decode_limit(N, N);
    const AlternatedDecode runs = alternated_decode(weights, users, none, o.steps, o.rounds);
    const double fused = median(runs.first), base = median(runs.second);
    const double fused_over_base = median(runs.first_over_second);
    double merge = 0;
    if (std::find(o.merge_users.begin(), o.merge_users.end(), N) != o.merge_users.end()) {
      std::vector<const AdapterFile*> user_files;
      for (int i = 0; i < N; ++i) user_files.push_back(served[size_t(i)]->file.get());
      merge = N / merge_round_seconds(weights, user_files, N >= 16 ? 1 : 2);
    }
    std::printf("%4d  %11.2f  %11.2f (%5.1f%%)  %10.2f  %10.2f  %11.2f  %11.1f\n", N, limit, fused,
                100 * fused / limit, base, fused_over_base, merge, merge > 0 ? fused / merge : 0.0);
    std::fflush(stdout);
    decode.push_back({{"users", N},
                      {"limit_tokens_per_s", limit},
                      {"fused_tokens_per_s", fused},
                      {"fused_of_limit", fused / limit},
                      {"base_tokens_per_s", base},
                      {"fused_over_base", fused_over_base},
                      {"fused_rounds", runs.first},
                      {"base_rounds", runs.second},
                      {"merge_tokens_per_s", merge},
                      {"bytes_per_step", step_bytes}});
  }
  out["decode"] = decode;

  // 2b. Sixteen sequences over 5 adapters (consecutive sequences share one, as the engine
  // groups them) against over 16: the part of resident-adapter scaling that is the roofline's.
  if (std::find(o.users.begin(), o.users.end(), 16) != o.users.end()) {
    std::cerr << "decode N=16 over 5 adapters ...\n";
    constexpr int N = 16, kShared = 5;
    std::vector<const LlamaDelta*> distinct, shared;
    for (int i = 0; i < N; ++i) {
      distinct.push_back(&served[size_t(i)]->delta);
      shared.push_back(&served[size_t(i * kShared / N)]->delta);
    }
    const double shared_limit = decode_limit(N, kShared), distinct_limit = decode_limit(N, N);
    const AlternatedDecode runs = alternated_decode(weights, distinct, shared, o.steps, o.rounds);
    const double over_distinct = median(runs.first), over_shared = median(runs.second);
    std::printf(
        "N = 16 over 5 adapters: limit %.2f tok/s, fused %.2f (%.1f%%); over 16: limit %.2f, "
        "fused %.2f (%.1f%%); 16 over 5: limits %.3f, fused %.3f\n",
        shared_limit, over_shared, 100 * over_shared / shared_limit, distinct_limit, over_distinct,
        100 * over_distinct / distinct_limit, distinct_limit / shared_limit,
        median(runs.first_over_second));
    std::fflush(stdout);
    out["decode_shared"] = {{"users", N},
                            {"adapters", kShared},
                            {"limit_tokens_per_s", shared_limit},
                            {"fused_tokens_per_s", over_shared},
                            {"distinct_limit_tokens_per_s", distinct_limit},
                            {"distinct_fused_tokens_per_s", over_distinct},
                            {"distinct_over_shared", median(runs.first_over_second)}};
  }

  // 4. Switching between resident adapters.
  std::cerr << "switch latency ...\n";
  {
    AdapterCache cache(checkpoint, weights, o.dir + "/adapters");
    std::vector<std::string> names = cache.list();
    for (const std::string& name : names) cache.load_now(name);
    std::mt19937 rng(1);
    std::vector<double> lookups;
    for (int i = 0; i < 100000; ++i) {
      const std::string& name = names[rng() % names.size()];
      const auto start = Clock::now();
      const AdapterCache::Lookup lookup = cache.get(name);
      lookups.push_back(seconds_since(start));
      if (lookup.state != AdapterCache::State::Ready) fail("adapter ", name, " not resident");
    }
    // One sequence decoding, its adapter changing every step or never.
    auto step_times = [&](bool alternate) {
      KVBlockPool pool(weights.config, 8);
      StepScratch scratch;
      KVSequence kv;
      pool.reserve(kv, 100);
      std::vector<float> logits(size_t(weights.config.vocab_size));
      int32_t token = 1;
      std::vector<double> seconds;
      for (int s = 0; s < 41; ++s) {
        const StepSequence step{.tokens = &token,
                                .n = 1,
                                .kv = &kv,
                                .delta = &served[alternate ? size_t(s % 2) : 0]->delta,
                                .logits = logits.data()};
        const auto start = Clock::now();
        forward_step(weights, pool, {&step, 1}, scratch);
        if (s > 0) seconds.push_back(seconds_since(start));
        token = argmax(logits.data(), weights.config.vocab_size);
      }
      return seconds;
    };
    const std::vector<double> same = step_times(false), alternating = step_times(true);
    out["switch"] = {{"lookup_p50_us", 1e6 * percentile(lookups, 0.5)},
                     {"lookup_p99_us", 1e6 * percentile(lookups, 0.99)},
                     {"step_same_adapter_p50_ms", 1e3 * percentile(same, 0.5)},
                     {"step_alternating_p50_ms", 1e3 * percentile(alternating, 0.5)},
                     {"step_alternating_p99_ms", 1e3 * percentile(alternating, 0.99)}};
    std::printf(
        "\nswitch: cache lookup p50 %.2f us, p99 %.2f us; decode step with the same adapter "
        "p50 %.1f ms, alternating two adapters p50 %.1f ms (p99 %.1f ms)\n",
        1e6 * percentile(lookups, 0.5), 1e6 * percentile(lookups, 0.99),
        1e3 * percentile(same, 0.5), 1e3 * percentile(alternating, 0.5),
        1e3 * percentile(alternating, 0.99));
  }

  // 5. Cold load against the disk.
  std::cerr << "cold load ...\n";
  {
    const std::string probe = adapter_file(o.dir, kDistinctAdapters - 2);
    const double disk = disk_read_bandwidth(probe);
    // The last adapter, unmapped here (the decode part no longer needs it), dropped from the
    // page cache, then loaded through a cache over a folder holding only it.
    const std::string cold = adapter_file(o.dir, kDistinctAdapters - 1);
    const std::string folder = o.dir + "/cold";
    fs::remove_all(folder);
    fs::create_directories(folder);
    fs::create_hard_link(cold, folder + "/cold.bitdelta");
    served.back().reset();
    evict_from_page_cache(cold);
    AdapterCache cache(checkpoint, weights, folder);
    const auto start = Clock::now();
    const std::shared_ptr<const ServedAdapter> adapter = cache.load_now("cold");  // reads its pages
    const double mapped = seconds_since(start);
    const uint64_t sum = touch(*adapter);
    const double loaded = seconds_since(start);
    out["cold_load"] = {{"disk_read_GBps", disk / 1e9},
                        {"load_ms", 1e3 * mapped},
                        {"load_and_read_ms", 1e3 * loaded},
                        {"file_over_disk_bandwidth_ms", 1e3 * adapter_bytes / disk},
                        {"checksum", sum}};
    std::printf(
        "cold load (map, check, read every page on the loader thread) %.1f ms; read again "
        "%.1f ms in all; file size / disk bandwidth (%.2f GB/s) = %.1f ms\n",
        1e3 * mapped, 1e3 * loaded, disk / 1e9, 1e3 * adapter_bytes / disk);
    fs::remove_all(folder);
  }

  // 3. Resident adapters: 5 against 2,000 registered. The users held so far are let go first:
  // the engine's cache holds up to 64 of its own, and both sets would crowd 24 GiB.
  const int64_t served_bytes = served[0]->bytes;
  served.clear();
  if (o.scaling) {
    std::printf(
        "\nin flight  registered  phase    requests  tokens  tok/s  loads  ms/load  evictions  "
        "steps  mean batch  adapters/step  in steps  of floor\n");
    json scaling = json::array();
    // 16 registered: as many adapters in a step as with 2,000, but all of them resident after
    // the first phase, so that the difference to 2,000 is the cache's churn alone.
    std::vector<std::pair<int, int>> runs;
    for (int in_flight : o.resident_in_flight)
      for (int count : o.resident_registered) runs.emplace_back(in_flight, count);
    for (const auto& [in_flight, count] : runs) {
      std::cerr << "engine, " << in_flight << " requests in flight, " << count
                << " registered adapters ...\n";
      const std::string folder = registration_folder(o.dir, count);
      // Room for 64 adapters at what the cache counts for one (its file, plus its transposed
      // signs where this CPU's kernel has them).
      const auto [fill, cycling] =
          engine_throughput(checkpoint, weights, *tokenizer, folder, 16, in_flight, 96,
                            o.resident_tokens, 64 * served_bytes);
      for (const auto& [phase, r] : {std::pair{"fill", fill}, std::pair{"cycling", cycling}}) {
        // The least its steps could take, reading the base and each step's distinct adapters
        // once (the roofline's bytes; a step that also runs a prompt chunk does more work).
        const double floor_seconds =
            double(r.steps) * (base_bytes + r.mean_adapters * adapter_bytes) / bandwidth;
        std::printf(
            "%9d  %10d  %-7s  %8lld  %6lld  %5.1f  %5lld  %7.1f  %9lld  %5lld  %10.1f  %13.1f  "
            "%7.0f%%  %7.0f%%\n",
            in_flight, count, phase, (long long)r.requests, (long long)r.tokens, r.tokens_per_s,
            (long long)r.loads, r.loads > 0 ? 1e3 * r.load_seconds / double(r.loads) : 0.0,
            (long long)r.evictions, (long long)r.steps, r.mean_batch, r.mean_adapters,
            100 * r.step_seconds / r.seconds, 100 * floor_seconds / r.step_seconds);
        scaling.push_back({{"in_flight", in_flight},
                           {"registered", count},
                           {"phase", phase},
                           {"tokens_per_s", r.tokens_per_s},
                           {"tokens", r.tokens},
                           {"loads", r.loads},
                           {"load_seconds", r.load_seconds},
                           {"evictions", r.evictions},
                           {"steps", r.steps},
                           {"mean_batch", r.mean_batch},
                           {"mean_adapters_per_step", r.mean_adapters},
                           {"floor_seconds_in_steps", floor_seconds},
                           {"seconds_in_steps", r.step_seconds},
                           {"seconds", r.seconds}});
      }
      std::fflush(stdout);
    }
    out["resident_scaling"] = scaling;
  }

  // 6. Memory with 10,000 registered, 64 loaded.
  std::cerr << "memory ...\n";
  {
    const std::string folder = registration_folder(o.dir, 10000);
    const std::map<std::string, double> before = bench::memory_mib();
    AdapterCache cache(checkpoint, weights, folder);
    const std::vector<std::string> names = cache.list();
    const std::map<std::string, double> registered = bench::memory_mib();
    uint64_t sum = 0;
    for (int i = 0; i < 64; ++i) sum += touch(*cache.load_now(names[size_t(i)]));
    const std::map<std::string, double> hot = bench::memory_mib();
    out["memory_mib"] = {{"before", before},
                         {"registered_10000", registered},
                         {"hot_64", hot},
                         {"registered", names.size()},
                         {"checksum", sum}};
    std::printf(
        "\nmemory (MiB): before RSS %.0f (anon %.0f, file %.0f); %zu registered: RSS %.0f; "
        "64 loaded and read: RSS %.0f (anon %.0f, file %.0f)\n",
        before.at("VmRSS"), before.at("RssAnon"), before.at("RssFile"), names.size(),
        registered.at("VmRSS"), hot.at("VmRSS"), hot.at("RssAnon"), hot.at("RssFile"));
  }
  out["load_average_after"] = bench::load_average();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace bd

int main(int argc, char** argv) {
  return bd::bench::guarded_main("serve_bench", bd::run, argc, argv);
}
