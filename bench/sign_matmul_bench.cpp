// Packed-sign products against the dense BF16 product of the same shape: what a BitDelta overlay
// adds to each linear of a decode step (T = 1) or a prefill (T = 256).
//
//   build/sign_matmul_bench                   (all cores; OMP_NUM_THREADS=n for fewer)
//
// Both operands are spread over enough copies (≥ 512 MiB in all) that every call streams its
// matrix from DRAM, as decode does with a model much larger than the last-level cache.
// Counters: GBps: matrix bytes read per second (sign bits: O·I/8; BF16: 2·O·I); of_bw: that over
// the measured read bandwidth; Gweights: O·I·T weight-token products per second.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/huge_pages.h"
#include "core/threads.h"
#include "hwy/aligned_allocator.h"
#include "kernels/matmul.h"
#include "kernels/matmul_panels.h"
#include "kernels/membw.h"
#include "kernels/sign_matmul.h"

namespace {

double g_read_bandwidth = 0;  // bytes/s, measured once at start

constexpr size_t kMinBytes = size_t(512) << 20;

// `count` copies of `one` random bytes, together at least kMinBytes.
std::vector<uint8_t> random_copies(size_t one, size_t* count) {
  *count = (kMinBytes + one - 1) / one;
  std::vector<uint8_t> bytes(one * *count);
  std::mt19937 rng(1);
  for (size_t i = 0; i < one; ++i) bytes[i] = uint8_t(rng());
  for (size_t c = 1; c < *count; ++c) std::memcpy(bytes.data() + c * one, bytes.data(), one);
  return bytes;
}

// A BF16 matrix W[O, I] of uniform values in [-1, 1) rather than random bit patterns (no NaN,
// no subnormals).
std::vector<uint8_t> random_bf16(int64_t O, int64_t I) {
  std::vector<float> values(size_t(O * I));
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : values) v = uniform(rng);
  std::vector<uint8_t> bytes(values.size() * 2);
  bd::from_f32(bd::DType::BF16, values.data(), bytes.data(), values.size());
  return bytes;
}

// Copies of one random_bf16 matrix, as many as random_copies makes.
std::vector<uint8_t> random_bf16_copies(int64_t O, int64_t I, size_t* count) {
  const std::vector<uint8_t> one_copy = random_bf16(O, I);
  const size_t one = one_copy.size();
  *count = (kMinBytes + one - 1) / one;
  std::vector<uint8_t> bytes(one * *count);
  for (size_t c = 0; c < *count; ++c) std::memcpy(bytes.data() + c * one, one_copy.data(), one);
  return bytes;
}

void set_counters(benchmark::State& state, double matrix_bytes, double weights) {
  const double calls = double(state.iterations());
  using benchmark::Counter;
  state.counters["GBps"] = Counter(matrix_bytes * calls / 1e9, Counter::kIsRate);
  state.counters["of_bw"] = Counter(matrix_bytes * calls / g_read_bandwidth, Counter::kIsRate);
  state.counters["Gweights"] = Counter(weights * calls / 1e9, Counter::kIsRate);
}

// The packed tiles of every copy of the signs (copy c at c · sign_tiles_bytes(O, I)), in huge
// pages as the server's adapter cache keeps them; null where this CPU's kernel has no tiles.
bd::HugePages packed_tiles(const std::vector<uint8_t>& bits, size_t one, int64_t O, int64_t I,
                           size_t count) {
  const int64_t tile_bytes = bd::sign_tiles_bytes(O, I);
  if (tile_bytes == 0) return nullptr;
  bd::HugePages tiles = bd::allocate_huge_pages(size_t(tile_bytes) * count, "packed tiles");
  for (size_t c = 0; c < count; ++c)
    bd::pack_sign_tiles(bits.data() + c * one, O, I, tiles.get() + c * size_t(tile_bytes));
  return tiles;
}

// Args: O, I, T. y += γ ⊙ (x · Sᵀ) with one scale per row.
void BM_Sign(benchmark::State& state) {
  const int64_t O = state.range(0), I = state.range(1), T = state.range(2);
  const size_t one = size_t(O * bd::sign_row_bytes(I));
  size_t count;
  const std::vector<uint8_t> bits = random_copies(one, &count);
  std::vector<float> x(size_t(T * I), 0.5f), y(size_t(T * O)), scale(size_t(O), 0.01f);
  size_t next = 0;
  for (auto _ : state) {
    bd::sign_matmul(y.data(), x.data(), bits.data() + next * one, scale.data(), true, T, O, I);
    next = (next + 1) % count;
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(one), double(O * I * T));
  state.SetLabel("sign");
}

// One segment per user of `tokens` rows each, user u reading copy (next + u) % count of the
// signs (`one` bytes each; their packed tiles too where the CPU's kernel uses them).
void user_segments(std::vector<bd::SignSegment>& segments, int64_t tokens, const uint8_t* bits,
                   size_t one, const uint8_t* tiles, int64_t tile_bytes, size_t count, size_t next,
                   const float* scale) {
  for (size_t u = 0; u < segments.size(); ++u) {
    const size_t copy = (next + u) % count;
    segments[u] = {int64_t(u) * tokens,
                   tokens,
                   bits + copy * one,
                   scale,
                   true,
                   tile_bytes > 0 ? tiles + copy * size_t(tile_bytes) : nullptr,
                   tokens};
  }
}

// Args: O, I, users, tokens per user. A served step's sign products: `users` segments of
// `tokens` rows each, every user with their own signs, packed ahead where this CPU's kernel uses
// the transposed layout (as the server's adapter cache keeps them), all by table lookups at any
// row count (the server takes them up to kGenerateLookupMaxTokens rows). Gweights counts O·I per
// row.
void BM_SignSegments(benchmark::State& state) {
  const int64_t O = state.range(0), I = state.range(1), users = state.range(2);
  const int64_t tokens = state.range(3), rows = users * tokens;
  const size_t one = size_t(O * bd::sign_row_bytes(I));
  size_t count;
  const std::vector<uint8_t> bits = random_copies(one, &count);
  const int64_t tile_bytes = bd::sign_tiles_bytes(O, I);
  const bd::HugePages tiles = packed_tiles(bits, one, O, I, count);
  std::vector<float> x(size_t(rows * I), 0.5f), y(size_t(rows * O)), scale(size_t(O), 0.01f);
  std::vector<bd::SignSegment> segments(static_cast<size_t>(users));
  size_t next = 0;
  for (auto _ : state) {
    user_segments(segments, tokens, bits.data(), one, tiles.get(), tile_bytes, count, next,
                  scale.data());
    bd::sign_matmul_segments(y.data(), x.data(), segments, O, I);
    next = (next + size_t(users)) % count;
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(one) * double(users), double(O * I * rows));
  state.SetLabel("segments");
}

// Args: O, I, users, path. A served decode step of one linear: `users` tokens, each with their
// own adapter's signs (packed ahead), over W's BF16 panels as a server keeps them. Path 0: the
// base product then the lookups (matmul_panels, sign_matmul_segments); 1: the base product
// alone. GBps counts the panels' and the signs' bytes; Gweights O·I per token.
void BM_PanelsSigns(benchmark::State& state) {
  const int64_t O = state.range(0), I = state.range(1), users = state.range(2);
  const int64_t path = state.range(3);
  if (!bd::panels_preferred()) return state.SkipWithError("no panels on this CPU");
  const int64_t tile_bytes = bd::sign_tiles_bytes(O, I);
  const size_t one_s = size_t(O * bd::sign_row_bytes(I)), one_p = size_t(bd::panel_bytes(O, I));
  size_t count_s, count_p;
  const std::vector<uint8_t> bits = random_copies(one_s, &count_s);
  random_copies(one_p, &count_p);  // for the count: the values are set below
  const bd::HugePages tiles = packed_tiles(bits, one_s, O, I, count_s);
  auto panels = hwy::AllocateAligned<uint32_t>(one_p / 4 * count_p);
  {  // the same values in every copy
    const std::vector<uint8_t> bf16 = random_bf16(O, I);
    bd::pack_panels({bd::DType::BF16, {O, I}, bf16.data()}, panels.get());
    for (size_t c = 1; c < count_p; ++c)
      std::memcpy(panels.get() + c * one_p / 4, panels.get(), one_p);
  }
  std::vector<float> x(size_t(users * I), 0.5f), y(size_t(users * O)), scale(size_t(O), 0.01f);
  std::vector<bd::SignSegment> segments(static_cast<size_t>(users));
  size_t next = 0;
  for (auto _ : state) {
    user_segments(segments, 1, bits.data(), one_s, tiles.get(), tile_bytes, count_s, next,
                  scale.data());
    const uint32_t* panel = panels.get() + (next % count_p) * one_p / 4;
    bd::matmul_panels(y.data(), x.data(), panel, O, I, users, false);
    if (path == 0) bd::sign_matmul_segments(y.data(), x.data(), segments, O, I);
    next += size_t(users);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(one_p) + (path == 1 ? 0.0 : double(one_s * size_t(users))),
               double(O * I * users));
  state.SetLabel(path == 0 ? "panels then signs" : "panels alone");
}

// Args: O, I. pack_sign_tiles of one matrix (the transposed layout of the lookups), from
// signs and into tiles that are both out of cache: what a server's adapter load costs per matrix
// beyond reading its file. GBps counts the sign bytes.
void BM_PackTiles(benchmark::State& state) {
  const int64_t O = state.range(0), I = state.range(1);
  const int64_t tile_bytes = bd::sign_tiles_bytes(O, I);
  if (tile_bytes == 0) return state.SkipWithError("no transposed layout on this CPU");
  const size_t one = size_t(O * bd::sign_row_bytes(I));
  size_t count;
  const std::vector<uint8_t> bits = random_copies(one, &count);
  const bd::HugePages tiles = bd::allocate_huge_pages(size_t(tile_bytes) * count, "packed tiles");
  std::memset(tiles.get(), 0, size_t(tile_bytes) * count);  // fault the pages in first
  size_t next = 0;
  for (auto _ : state) {
    bd::pack_sign_tiles(bits.data() + next * one, O, I, tiles.get() + next * size_t(tile_bytes));
    next = (next + 1) % count;
    benchmark::ClobberMemory();
  }
  set_counters(state, double(one), double(O * I));
  state.SetLabel("pack");
}

// Args: O, I, T. y = x · Wᵀ with W in BF16: the base product the overlay rides on.
void BM_DenseBF16(benchmark::State& state) {
  const int64_t O = state.range(0), I = state.range(1), T = state.range(2);
  const size_t one = size_t(O * I) * 2;
  size_t count;
  const std::vector<uint8_t> bytes = random_bf16_copies(O, I, &count);
  std::vector<float> x(size_t(T * I), 0.5f), y(size_t(T * O));
  size_t next = 0;
  for (auto _ : state) {
    const bd::TensorView w{bd::DType::BF16, {O, I}, bytes.data() + next * one};
    bd::matmul(y.data(), x.data(), w, T);
    next = (next + 1) % count;
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(one), double(O * I * T));
  state.SetLabel("bf16");
}

// Args: O, I, packed. One token's base product and one adapter's signs in one pass
// (matmul_sign_one_token: decode of a single sequence), BF16 W; the signs packed ahead (1, as a
// server keeps a resident adapter) or transposed in each call (0, as bitdelta generate runs).
// Against decode/bf16, the base product alone. GBps counts W's and the signs' bytes.
void BM_OneToken(benchmark::State& state) {
  const int64_t O = state.range(0), I = state.range(1);
  const bool packed = state.range(2) != 0;
  const size_t one_w = size_t(O * I) * 2, one_s = size_t(O * bd::sign_row_bytes(I));
  size_t count;
  const std::vector<uint8_t> weights = random_bf16_copies(O, I, &count);
  std::vector<uint8_t> bits(one_s * count);
  std::mt19937 rng(3);
  for (uint8_t& b : bits) b = uint8_t(rng());
  const int64_t tile_bytes = bd::sign_tiles_bytes(O, I);
  if (packed && tile_bytes == 0) return state.SkipWithError("no packed layout on this CPU");
  const bd::HugePages tiles = packed ? packed_tiles(bits, one_s, O, I, count) : nullptr;
  std::vector<float> x(static_cast<size_t>(I), 0.5f), y(static_cast<size_t>(O)),
      scale(static_cast<size_t>(O), 0.01f);
  size_t next = 0;
  for (auto _ : state) {
    const bd::TensorView w{bd::DType::BF16, {O, I}, weights.data() + next * one_w};
    const bd::SignSegment signs{0,
                                1,
                                bits.data() + next * one_s,
                                scale.data(),
                                true,
                                packed ? tiles.get() + next * size_t(tile_bytes) : nullptr};
    bd::matmul_sign_one_token(y.data(), x.data(), w, signs, /*accumulate=*/false);
    next = (next + 1) % count;
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(one_w + one_s), double(O * I));
  state.SetLabel(packed ? "one pass, packed" : "one pass");
}

// Args: O, I, T. y = x · (W + γ ⊙ S)ᵀ for one segment of T rows (a prompt chunk): BF16 W and
// the signs merged block by block (matmul_merged_signs). Gweights counts O·I·T.
void BM_Merged(benchmark::State& state) {
  const int64_t O = state.range(0), I = state.range(1), T = state.range(2);
  const size_t one_w = size_t(O * I) * 2, one_s = size_t(O * bd::sign_row_bytes(I));
  size_t count_w, count_s;
  const std::vector<uint8_t> w_copies = random_bf16_copies(O, I, &count_w);
  const std::vector<uint8_t> bits = random_copies(one_s, &count_s);
  std::vector<float> x(size_t(T * I), 0.5f), y(size_t(T * O)), scale(size_t(O), 0.01f);
  size_t next = 0;
  for (auto _ : state) {
    const bd::TensorView w{bd::DType::BF16, {O, I}, w_copies.data() + (next % count_w) * one_w};
    const bd::SignSegment signs{0, T, bits.data() + (next % count_s) * one_s, scale.data(), true};
    bd::matmul_merged_signs(y.data(), x.data(), w, signs, false);
    ++next;
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(one_w + one_s), double(O * I * T));
  state.SetLabel("merged");
}

// The matrices of a 1.1B Llama (hidden 2048, intermediate 5632, 4 of 32 heads for K/V) and of a
// 7B one (4096, 11008).
void Shapes(benchmark::internal::Benchmark* b, int64_t T) {
  const int64_t shapes[][2] = {{2048, 2048}, {256, 2048},  {5632, 2048},
                               {2048, 5632}, {4096, 4096}, {11008, 4096}};
  for (const auto& s : shapes) b->Args({s[0], s[1], T});
}

BENCHMARK(BM_Sign)->Name("decode/sign")->Apply([](auto* b) {
                                         Shapes(b, 1);
                                       }) -> UseRealTime() -> Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DenseBF16)->Name("decode/bf16")->Apply([](auto* b) {
                                              Shapes(b, 1);
                                            }) -> UseRealTime() -> Unit(benchmark::kMicrosecond);

BENCHMARK(BM_OneToken)
    ->Name("decode/one_pass")
    ->ArgsProduct({{5632}, {2048}, {0, 1}})
    ->ArgsProduct({{2048}, {5632}, {0, 1}})
    ->ArgsProduct({{2048}, {2048}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// A prompt chunk of T rows with one adapter, base and signs merged, against the base alone
// (tokens/bf16): what the adapter adds to a prefill.
BENCHMARK(BM_Merged)
    ->Name("prompt/merged")
    ->Args({5632, 2048, 9})
    ->Args({5632, 2048, 16})
    ->Args({5632, 2048, 22})
    ->Args({5632, 2048, 32})
    ->Args({5632, 2048, 64})
    ->Args({5632, 2048, 128})
    ->Args({5632, 2048, 256})
    ->Args({5632, 2048, 512})
    ->Args({2048, 5632, 512})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_PanelsSigns)
    ->Name("step/panels")
    ->ArgsProduct({{5632}, {2048}, {16}, {1, 0}})
    ->ArgsProduct({{2048}, {5632}, {16}, {1, 0}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// 16 users of one token each (16 adapters in a decode batch), and 5 users of 3 (the same rows
// shared among 5 adapters): the bytes of signs per row differ threefold, the lookups do not.
BENCHMARK(BM_SignSegments)
    ->Name("batch/sign")
    ->Args({5632, 2048, 16, 1})
    ->Args({5632, 2048, 5, 3})
    ->Args({2048, 5632, 16, 1})
    ->Args({2048, 5632, 5, 3})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_PackTiles)
    ->Name("load/pack")
    ->Args({5632, 2048})
    ->Args({2048, 5632})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// One user's prompt chunk of T rows by lookups, as generation runs chunks of up to
// kGenerateLookupMaxTokens rows: against prompt/merged less tokens/bf16 (the base product that
// the chunk's rows share with the rest of the step), where the lookups stop paying.
BENCHMARK(BM_SignSegments)
    ->Name("prompt/lookups")
    ->Args({5632, 2048, 1, 9})
    ->Args({5632, 2048, 1, 16})
    ->Args({5632, 2048, 1, 22})
    ->Args({5632, 2048, 1, 32})
    ->Args({5632, 2048, 1, 64})
    ->Args({5632, 2048, 1, 128})
    ->Args({5632, 2048, 1, 256})
    ->Args({5632, 2048, 1, 512})
    ->Args({2048, 5632, 1, 22})
    ->Args({2048, 5632, 1, 64})
    ->Args({2048, 5632, 1, 128})
    ->Args({2048, 5632, 1, 512})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Where the quantized GEMV stops beating widened SGEMM as tokens grow (kSignGemvMaxTokens).
void Tokens(benchmark::internal::Benchmark* b) {
  for (int64_t T : {1, 2, 4, 8, 9, 16, 22, 32, 64, 128, 256, 512}) b->Args({5632, 2048, T});
}
BENCHMARK(BM_Sign)
    ->Name("tokens/sign")
    ->Apply(Tokens)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DenseBF16)
    ->Name("tokens/bf16")
    ->Apply(Tokens)
    ->Args({2048, 5632, 512})  // beside prompt/lookups/2048/5632/1/512
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  g_read_bandwidth = bd::measure_read_bandwidth();
  benchmark::AddCustomContext("threads", std::to_string(bd::num_threads()));
  benchmark::AddCustomContext("read_bandwidth_GBps", std::to_string(g_read_bandwidth / 1e9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
