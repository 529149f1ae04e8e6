#include "kernels/membw.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "core/error.h"
#include "core/huge_pages.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/membw.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sum of values[0, n) (n a multiple of 4 vectors): four independent accumulators so that the
// adds never wait on each other and only the loads limit the rate.
float SumStream(const float* HWY_RESTRICT values, size_t n) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  auto sum0 = hn::Zero(df), sum1 = hn::Zero(df), sum2 = hn::Zero(df), sum3 = hn::Zero(df);
  for (size_t i = 0; i + 4 * N <= n; i += 4 * N) {
    sum0 = hn::Add(sum0, hn::Load(df, values + i));
    sum1 = hn::Add(sum1, hn::Load(df, values + i + N));
    sum2 = hn::Add(sum2, hn::Load(df, values + i + 2 * N));
    sum3 = hn::Add(sum3, hn::Load(df, values + i + 3 * N));
  }
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(sum0, sum1), hn::Add(sum2, sum3))));
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bd {
HWY_EXPORT(SumStream);

double measure_read_bandwidth(size_t bytes, int repeats) {
  // Chunks of 64 KiB: whole vectors, and many per thread so the static schedule stays balanced.
  constexpr size_t kChunk = 16384;
  const size_t chunks = std::max<size_t>(1, bytes / (kChunk * sizeof(float)));
  // In huge pages where the kernel allows (core/huge_pages.h), as a server's weights are, so that
  // TLB misses do not lower the ceiling.
  const size_t size = chunks * kChunk * sizeof(float);
  const HugePages buffer = allocate_huge_pages(size, "the read-bandwidth probe");
  auto* values = reinterpret_cast<float*>(buffer.get());
  // Written (not just allocated) so that every page is backed by its own memory, and by the
  // thread that later reads it.
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < chunks; ++c) {
    for (size_t i = 0; i < kChunk; ++i) values[c * kChunk + i] = float(i & 7);
  }
  double best = 0;
  volatile float sink = 0;  // keeps the sums alive
  for (int r = 0; r < repeats; ++r) {
    float total = 0;
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (size_t c = 0; c < chunks; ++c) {
      total += HWY_DYNAMIC_DISPATCH(SumStream)(values + c * kChunk, kChunk);
    }
    const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
    sink = sink + total;
    best = std::max(best, double(chunks * kChunk * sizeof(float)) / seconds.count());
  }
  return best;
}

}  // namespace bd
#endif  // HWY_ONCE
