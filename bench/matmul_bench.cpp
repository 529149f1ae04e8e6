// Per-matrix matmul throughput against the measured memory read bandwidth.
//
//   build/matmul_bench                   (all cores; OMP_NUM_THREADS=n for fewer)
//
// Weights are spread over enough copies (≥ 512 MiB in all) that every call streams its matrix
// from DRAM, as decode does with a model much larger than the last-level cache. Counters:
// W_GBps: weight bytes read per second; of_bw: that over the measured read bandwidth;
// GFLOPs: 2·T·O·I per call.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/threads.h"
#include "hwy/aligned_allocator.h"
#include "kernels/matmul.h"
#include "kernels/matmul_amx.h"
#include "kernels/matmul_gemv.h"
#include "kernels/matmul_panels.h"
#include "kernels/membw.h"

namespace {

double g_read_bandwidth = 0;  // bytes/s, measured once at start

constexpr size_t kMinBytes = size_t(512) << 20;

enum Path : int64_t { kAuto, kGemv, kSgemm, kPanels };
constexpr bd::DType kDTypes[] = {bd::DType::F32, bd::DType::BF16, bd::DType::F16};

// Copies of one random O × I matrix in `dtype`, together at least kMinBytes.
struct Copies {
  std::vector<uint8_t> bytes;
  std::vector<bd::TensorView> views;
};

Copies make_copies(bd::DType dtype, int64_t O, int64_t I) {
  const size_t one = size_t(O * I) * bd::dtype_size(dtype);
  const size_t count = (kMinBytes + one - 1) / one;
  std::vector<float> values(size_t(O * I));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : values) v = uniform(rng);
  Copies copies;
  copies.bytes.resize(one * count);
  for (size_t c = 0; c < count; ++c) {
    bd::from_f32(dtype, values.data(), copies.bytes.data() + c * one, values.size());
    copies.views.push_back(bd::TensorView{dtype, {O, I}, copies.bytes.data() + c * one});
  }
  return copies;
}

// Args: O, I, T, dtype index, path.
void BM_Matmul(benchmark::State& state) {
  const int64_t O = state.range(0), I = state.range(1), T = state.range(2);
  const bd::DType dtype = kDTypes[state.range(3)];
  const auto path = Path(state.range(4));
  const Copies copies = make_copies(dtype, O, I);
  std::vector<hwy::AlignedFreeUniquePtr<uint32_t[]>> panels;  // kPanels: each copy re-laid
  if (path == kPanels) {
    for (const bd::TensorView& w : copies.views) {
      panels.push_back(hwy::AllocateAligned<uint32_t>(size_t(bd::panel_bytes(O, I)) / 4));
      bd::pack_panels(w, panels.back().get());
    }
  }
  std::vector<float> in(size_t(T * I), 0.5f), out(size_t(T * O));
  size_t next = 0;
  for (auto _ : state) {
    const bd::TensorView& w = copies.views[next];
    if (path == kPanels) {
      bd::matmul_panels(out.data(), in.data(), panels[next].get(), O, I, T, false);
    } else if (path == kGemv) {
      bd::gemv(out.data(), in.data(), w, T, false);
    } else if (path == kSgemm) {
      bd::matmul_sgemm(out.data(), in.data(), w, T);
    } else {
      bd::matmul(out.data(), in.data(), w, T);
    }
    benchmark::DoNotOptimize(out.data());
    next = (next + 1) % copies.views.size();
  }
  const double weight_bytes = double(O * I) * double(bd::dtype_size(dtype));
  const double calls = double(state.iterations());
  using benchmark::Counter;
  state.counters["W_GBps"] = Counter(weight_bytes * calls / 1e9, Counter::kIsRate);
  state.counters["of_bw"] = Counter(weight_bytes * calls / g_read_bandwidth, Counter::kIsRate);
  state.counters["GFLOPs"] = Counter(2.0 * double(T * O * I) * calls / 1e9, Counter::kIsRate);
  const bool amx = bd::amx_available() && path == kAuto;
  state.SetLabel(std::string(bd::dtype_name(dtype)) +
                 (path == kSgemm    ? " sgemm"
                  : path == kPanels ? " panels"
                  : path == kAuto   ? " matmul"
                                    : " gemv") +
                 (amx ? " (AMX where it applies)" : ""));
}

// The matrices of a 1.1B Llama (hidden 2048, intermediate 5632, 4 of 32 heads for K/V, vocab
// 32000), one token, every dtype: how close each comes to the bandwidth limit.
void DecodeShapes(benchmark::internal::Benchmark* b) {
  const int64_t shapes[][2] = {
      {2048, 2048}, {256, 2048}, {5632, 2048}, {2048, 5632}, {32000, 2048}};
  for (int64_t d = 0; d < 3; ++d) {
    for (const auto& s : shapes) b->Args({s[0], s[1], 1, d, kAuto});
  }
}
BENCHMARK(BM_Matmul)
    ->Name("decode")
    ->Apply(DecodeShapes)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Where the GEMV (streaming below 4 tokens, register tiles from 4) stops beating widened SGEMM as
// tokens grow (sets kGemvMaxTokens).
void Crossover(benchmark::internal::Benchmark* b) {
  for (int64_t T : {1, 2, 3, 4, 8, 12, 16, 32, 64, 128, 256}) {
    for (int64_t path : {kGemv, kSgemm}) b->Args({5632, 2048, T, 1, path});
  }
  for (int64_t T : {1, 4, 8, 16, 64, 256}) {
    for (int64_t path : {kGemv, kSgemm}) b->Args({5632, 2048, T, 0, path});
  }
}
BENCHMARK(BM_Matmul)
    ->Name("crossover")
    ->Apply(Crossover)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// matmul, which takes the AMX path (kernels/matmul_amx.h) on CPUs that have it, against the AVX
// kernels of the GEMV on the same machine, for the token counts of batched decode and prompt
// chunks, on every matrix shape of the model.
void Amx(benchmark::internal::Benchmark* b) {
  const int64_t shapes[][2] = {
      {2048, 2048}, {256, 2048}, {5632, 2048}, {2048, 5632}, {32000, 2048}};
  for (const auto& s : shapes) {
    for (int64_t T : {1, 4, 16, 32, 64, 128, 256}) {
      for (int64_t path : {kAuto, kGemv}) b->Args({s[0], s[1], T, 1, path});
    }
  }
}
BENCHMARK(BM_Matmul)->Name("amx")->Apply(Amx)->UseRealTime()->Unit(benchmark::kMicrosecond);

// BF16 panels (kernels/matmul_panels.h, serving on AVX2) against the GEMV's streaming and tiles
// at the token counts of batched decode and short prompt chunks, on both MLP shapes.
void Panels(benchmark::internal::Benchmark* b) {
  for (const auto& shape : {std::pair<int64_t, int64_t>{5632, 2048}, {2048, 5632}}) {
    for (int64_t T : {1, 2, 4, 8, 16, 24, 32, 64}) {
      for (int64_t path : {kGemv, kPanels}) b->Args({shape.first, shape.second, T, 1, path});
    }
  }
}
BENCHMARK(BM_Matmul)->Name("panels")->Apply(Panels)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Prefill-sized products: widened-block SGEMM against SGEMM on F32 weights.
void Prefill(benchmark::internal::Benchmark* b) {
  for (int64_t d = 0; d < 3; ++d) b->Args({5632, 2048, 256, d, kAuto});
}
BENCHMARK(BM_Matmul)->Name("prefill")->Apply(Prefill)->UseRealTime()->Unit(benchmark::kMillisecond);

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
