// Packed-sign products. Few tokens (decode): each token's x is quantized to 14-bit integers and
// Σ_i S[o, i]·q[i] = 2·Σ_{bit set} q[i] − Σ_i q[i] is summed exactly in integers by table
// lookups of 4-column sums (kernels/sign_lut-inl.h): 128 signs per vpshufb on AVX2, 256 per
// vpermb on AVX-512 with VBMI and VNNI (each several times the rate of masked F32 adds or of
// sign-times-byte multiply-adds on the machines measured, where those, not the reads of the bits,
// set the pace); other targets sum masked 16-bit multiply-adds. Many tokens (prefill, training):
// blocks of rows are widened to ±scale floats and handed to SGEMM, which reuses each block across
// tokens.
#include "kernels/sign_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "hwy/aligned_allocator.h"
#include "kernels/matmul_amx.h"
#include "kernels/parallel.h"
#include "omp.h"

#ifndef BD_KERNELS_SIGN_MATMUL_ONCE
#define BD_KERNELS_SIGN_MATMUL_ONCE
namespace bd {
// The few-token path's input: x quantized to integers, one step per token:
// S·x ≈ step·(2·Σ_{bit set} q − Σ q). Every target forms the same integer sums exactly, so
// results do not depend on the CPU.
struct QuantizedTokens {
  const int16_t* q;      // [T, I]: q = round(x / step), |q| ≤ kSignQuantMax
  const float* step;     // [T]: max|x| / kSignQuantMax (NaN where x holds inf or NaN)
  const int64_t* total;  // [T]: Σ_i q
};

// One few-token product: rows row0 .. row0 + rows − 1 of x and out with these signs.
struct SignJob {
  const uint8_t* bits;
  const float* scale;  // null: 1
  bool per_row;
  size_t row0, rows;
  const uint8_t* tiles;  // null, or the bits already transposed (pack_sign_tiles)
};
}  // namespace bd
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/sign_matmul.cpp"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/gemv_row-inl.h"
#include "kernels/panel_strip-inl.h"
#include "kernels/sign_bits-inl.h"
#include "kernels/sign_lut-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {  // hn, DF and VF come from gemv_row-inl.h
using MF = hn::Mask<DF>;

// Rows per unit of work for the thread pool in the few-token path.
constexpr size_t kRowBlock = 32;

HWY_INLINE bool SignBit(const uint8_t* row_bits, size_t i) {
  return (row_bits[i / 8] >> (i % 8)) & 1;
}

// Σ_{i: S[row, i] = +1} q[i], 16-bit lanes: a 0/1 lane per sign, multiplied and widened in pairs.
HWY_INLINE int64_t PlusSumQ(const uint8_t* HWY_RESTRICT row_bits, const int16_t* HWY_RESTRICT q,
                            size_t I) {
  const hn::ScalableTag<int16_t> d16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const size_t N = hn::Lanes(d16);
  const auto one = hn::Set(d16, int16_t{1});
  auto sum0 = hn::Zero(d32), sum1 = hn::Zero(d32);
  size_t i = 0;
  for (; i + N <= I; i += N) {
    const auto plus = hn::IfThenElseZero(LoadSignMask(d16, row_bits, i), one);
    sum0 = hn::ReorderWidenMulAccumulate(d32, hn::LoadU(d16, q + i), plus, sum0, sum1);
  }
  int64_t sum = hn::GetLane(hn::SumOfLanes(d32, hn::Add(sum0, sum1)));
  for (; i < I; ++i)
    if (SignBit(row_bits, i)) sum += q[i];
  return sum;
}

// out[t, row0 + r] (+)= factor · step[t] · (2·plus[r] − Σ q[t]) for r < rows, factor = the
// job's scale (per_row: [O]) or 1 without one.
HWY_INLINE void StoreProducts(float* out, const QuantizedTokens& x, const SignJob& job, size_t t,
                              size_t row0, size_t rows, const int64_t* plus, size_t O,
                              bool accumulate) {
  for (size_t r = 0; r < rows; ++r) {
    const size_t row = row0 + r;
    const double factor = job.scale ? job.scale[job.per_row ? row : 0] : 1.0;
    const float product = float(factor * double(x.step[t]) * double(2 * plus[r] - x.total[t]));
    float* o = out + t * O + row;
    *o = accumulate ? *o + product : product;
  }
}

// One token's row of QuantizedTokens from x[I]: step = max|x| / kSignQuantMax, q = x / step
// rounded to nearest, ties to even (lrint's rounding, so every target gets the same q), and Σ q.
// Non-finite x gives all q = 0 and a NaN step (NaN outputs, as the F32 sums would give).
void QuantizeRow(const float* HWY_RESTRICT x, size_t I, int16_t* HWY_RESTRICT q, float* step,
                 int64_t* total) {
  const DF df;
  const hn::Rebind<int32_t, DF> di32;
  const hn::Rebind<int16_t, DF> di16;
  const size_t N = hn::Lanes(df);
  VF max_abs = hn::Zero(df);
  auto finite = hn::FirstN(df, N);  // all true
  size_t i = 0;
  for (; i + N <= I; i += N) {
    const VF v = hn::LoadU(df, x + i);
    finite = hn::And(finite, hn::IsFinite(v));
    max_abs = hn::Max(max_abs, hn::Abs(v));
  }
  float largest = hn::GetLane(hn::MaxOfLanes(df, max_abs));
  bool all_finite = hn::AllTrue(df, finite);
  for (size_t j = i; j < I; ++j) {
    all_finite = all_finite && std::isfinite(x[j]);
    largest = std::max(largest, std::fabs(x[j]));
  }
  if (!all_finite) {  // NaN · 0 would round to an arbitrary integer: write the zeros outright
    std::fill_n(q, I, int16_t{0});
    *step = std::numeric_limits<float>::quiet_NaN();
    *total = 0;
    return;
  }
  constexpr float kMaxQ = float(kSignQuantMax);
  *step = largest / kMaxQ;
  const float inverse = largest > 0 ? kMaxQ / largest : 0.0f;
  const VF scale = hn::Set(df, inverse);
  const auto q_max = hn::Set(di32, kSignQuantMax), q_min = hn::Set(di32, -kSignQuantMax);
  int64_t sum = 0;
  auto block_sum = hn::Zero(di32);  // ≤ 2^12 values per lane between flushes: no overflow
  i = 0;
  for (size_t in_block = 0; i + N <= I; i += N) {
    const auto rounded =
        hn::Min(q_max, hn::Max(q_min, hn::NearestInt(hn::Mul(hn::LoadU(df, x + i), scale))));
    block_sum = hn::Add(block_sum, rounded);
    hn::StoreU(hn::DemoteTo(di16, rounded), di16, q + i);
    if (++in_block == 4096) {
      sum += hn::GetLane(hn::SumOfLanes(di32, block_sum));
      block_sum = hn::Zero(di32);
      in_block = 0;
    }
  }
  sum += hn::GetLane(hn::SumOfLanes(di32, block_sum));
  for (; i < I; ++i) {
    const auto value =
        int16_t(std::clamp(std::lrint(x[i] * inverse), -long(kSignQuantMax), long(kSignQuantMax)));
    q[i] = value;
    sum += value;
  }
  *total = sum;
}

size_t TotalWork(const SignJob* jobs, size_t job_count, size_t O, size_t I) {
  size_t work = 0;
  for (size_t j = 0; j < job_count; ++j) work += jobs[j].rows * O * I;
  return work;
}

// out[row0 + r] (+)= W[row0 + r, :] · in for r < rows, one token: as the streaming GEMV
// computes each row, so that a fused pass gives the GEMV's sums (then StoreProducts adds).
template <typename WT>
HWY_INLINE void RowDotsToOut(const WT* w, const float* in, size_t I, size_t row0, size_t rows,
                             float* out, bool accumulate) {
  for (size_t r = 0; r < rows; ++r) {
    float sum;
    DotRow<1>(w + (row0 + r) * I, in, I, &sum);
    float* o = out + row0 + r;
    *o = accumulate ? *o + sum : sum;
  }
}

#if BD_SIGN_LUT
// The tokens of one job whose tables a pass over the job's tiles reads: few enough that their
// tables stay in L2 while the tiles stream past.
struct TokenGroup {
  size_t job, first, count;  // the job's rows first .. first + count
};

// For every job: out[t, o] (+)= factor[o] · step[t] · (2·Σ_{bit set} q[t] − Σ q[t]) over its
// rows t (StoreProducts). First every token's tables, then one parallel pass over all jobs'
// tiles (static: each thread streams a contiguous run of them), each transposed once into the
// thread's buffer (L1: 11–22 KiB for rows of 5632) and run against each of the job's tokens.
// Tiles packed ahead stream from DRAM: the next one is prefetched with each one's lookups (on
// AVX-512, 5632 × 2048 for 16 users, 1.3–1.4 ms against 1.8–2.0 without; two tiles ahead or
// prefetches to L1 were no faster). A job of many tokens (a prompt chunk) passes its tiles once
// per group of tokens whose tables fit kTableGroupBytes: all its tables at once would spill from
// L2 (16 KiB per token for rows of 2048, 44 KiB for 5632), and every tile reads all of them.
void SignGemvQ(float* out, const QuantizedTokens& x, const SignJob* jobs, size_t job_count,
               size_t O, size_t I, bool accumulate) {
  constexpr size_t kTableGroupBytes = size_t(1) << 20;
  const size_t row_bytes = (I + 7) / 8, chunks = LutChunks(I);
  const size_t table_bytes = chunks * kTableChunkBytes, tile_bytes = chunks * kTileChunkBytes;
  std::vector<const int16_t*> tokens;  // the q of each job's rows, in job order
  for (size_t j = 0; j < job_count; ++j)
    for (size_t t = jobs[j].row0; t < jobs[j].row0 + jobs[j].rows; ++t)
      tokens.push_back(x.q + t * I);
  auto tables = hwy::AllocateAligned<uint8_t>(tokens.size() * table_bytes);
  auto tiles = hwy::AllocateAligned<uint8_t>(size_t(omp_get_max_threads()) * tile_bytes);
  HWY_ASSERT(tables && tiles);
  const bool parallel = TotalWork(jobs, job_count, O, I) >= size_t(kMinParallelElements);
#pragma omp parallel for schedule(static) if (parallel && tokens.size() > 1)
  for (int64_t slot = 0; slot < int64_t(tokens.size()); ++slot)
    BuildLutTables(tokens[size_t(slot)], I, tables.get() + size_t(slot) * table_bytes);
  const size_t blocks = (O + kTileRows - 1) / kTileRows;
  const size_t group_tokens = std::max<size_t>(1, kTableGroupBytes / table_bytes);
  std::vector<size_t> first_slot(job_count, 0);
  for (size_t j = 1; j < job_count; ++j) first_slot[j] = first_slot[j - 1] + jobs[j - 1].rows;
  std::vector<TokenGroup> groups;
  for (size_t j = 0; j < job_count; ++j)
    for (size_t first = 0; first < jobs[j].rows; first += group_tokens)
      groups.push_back({j, first, std::min(group_tokens, jobs[j].rows - first)});
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t item = 0; item < int64_t(groups.size() * blocks); ++item) {
    const TokenGroup& group = groups[size_t(item) / blocks];
    const size_t j = group.job;
    const SignJob& job = jobs[j];
    const size_t row0 = (size_t(item) % blocks) * kTileRows, rows = std::min(kTileRows, O - row0);
    const uint8_t* tile = job.tiles ? job.tiles + (row0 / kTileRows) * tile_bytes : nullptr;
    LinePrefetcher next_tile;
    if (tile && row0 + kTileRows < O) {
      const char* next = reinterpret_cast<const char*>(tile + tile_bytes);
      next_tile = {next, next + tile_bytes};
    }
    if (!tile) {
      uint8_t* own = tiles.get() + size_t(omp_get_thread_num()) * tile_bytes;
      TransposeTile(job.bits + row0 * row_bytes, row_bytes, rows, own);
      tile = own;
    }
    for (size_t n = group.first; n < group.first + group.count; ++n) {
      int64_t plus[kTileRows];
      LutPlusRows(tile, tables.get() + (first_slot[j] + n) * table_bytes, chunks, plus, &next_tile);
      StoreProducts(out, x, job, job.row0 + n, row0, rows, plus, O, accumulate);
    }
  }
}

// The fused one-token pass: out[O] (+)= W·x + factor ⊙ (S·x) for one token (x.q row 0) and one
// job. Per tile (kTileRows rows): its signs are transposed and looked up while the first lines of
// its W rows are prefetched into L2 (a few lines per step: 10 KiB of a BF16 tile's 64 KiB on
// AVX2, of 128 KiB on AVX-512, with rows of 2048), then its W rows are streamed (DotRow). On its
// own the GEMV waits on DRAM and the lookups on the vector units; this way the lookups run while W
// streams in. Threads take a few tiles at a time (dynamic: a preempted thread holds up little).
template <typename WT>
void GemvSignsTyped(float* out, const float* in, const WT* w, const uint32_t* panels,
                    const QuantizedTokens& x, const SignJob& job, size_t O, size_t I,
                    bool accumulate) {
  const size_t row_bytes = (I + 7) / 8, chunks = LutChunks(I);
  const size_t tile_bytes = chunks * kTileChunkBytes;
  auto table = hwy::AllocateAligned<uint8_t>(chunks * kTableChunkBytes);
  auto tiles = hwy::AllocateAligned<uint8_t>(size_t(omp_get_max_threads()) * tile_bytes);
  HWY_ASSERT(table && tiles);
  BuildLutTables(x.q, I, table.get());
  const int64_t blocks = int64_t((O + kTileRows - 1) / kTileRows);
  const int64_t per_take = std::max<int64_t>(1, blocks / (8 * omp_get_max_threads()));
#pragma omp parallel for schedule(dynamic, per_take) if (O * I >= size_t(kMinParallelElements))
  for (int64_t b = 0; b < blocks; ++b) {
    const size_t row0 = size_t(b) * kTileRows, rows = std::min(kTileRows, O - row0);
    // The tile's rows of W (or their panel: the same 16 rows, GemvSigns), prefetched while its
    // signs are transposed and looked up.
    const uint32_t* panel = panels ? panels + size_t(b) * 8 * I : nullptr;
    const char* w_rows =
        panel ? reinterpret_cast<const char*>(panel) : reinterpret_cast<const char*>(w + row0 * I);
    LinePrefetcher prefetcher{w_rows, w_rows + (panel ? 32 * I : rows * I * sizeof(WT))};
    const uint8_t* tile = job.tiles ? job.tiles + size_t(b) * tile_bytes : nullptr;
    if (!tile) {
      uint8_t* own = tiles.get() + size_t(omp_get_thread_num()) * tile_bytes;
      TransposeTile(job.bits + row0 * row_bytes, row_bytes, rows, own, &prefetcher);
      tile = own;
    }
    int64_t plus[kTileRows];
    LutPlusRows(tile, table.get(), chunks, plus, &prefetcher);
    if (panel) {  // as matmul_panels alone, then StoreProducts adds
      StripTokens<1>(panel, in, I, O, row0, rows, out, accumulate, nullptr);
    } else {
      RowDotsToOut(w, in, I, row0, rows, out, accumulate);
    }
    StoreProducts(out, x, job, 0, row0, rows, plus, O, /*accumulate=*/true);
  }
}

size_t SignTilesBytes(size_t O, size_t I) {
  return (O + kTileRows - 1) / kTileRows * LutChunks(I) * kTileChunkBytes;
}

// tiles = S[O, I] transposed tile by tile, as SignGemvQ would on each call, streamed past the
// caches. One thread: a server's loader thread calls it beside the step loop's threads.
void PackSignTiles(const uint8_t* bits, size_t O, size_t I, uint8_t* tiles) {
  const size_t row_bytes = (I + 7) / 8, tile_bytes = LutChunks(I) * kTileChunkBytes;
  for (size_t row0 = 0; row0 < O; row0 += kTileRows)
    TransposeTile</*kStream=*/true>(bits + row0 * row_bytes, row_bytes,
                                    std::min(kTileRows, O - row0),
                                    tiles + row0 / kTileRows * tile_bytes);
  _mm_sfence();  // the streamed tiles are visible before whatever hands them to other threads
}

#else
// No lookup layout on this target: sign rows are read as stored.
size_t SignTilesBytes(size_t, size_t) {
  return 0;
}
void PackSignTiles(const uint8_t*, size_t, size_t, uint8_t*) {}

// For every job: out[t, o] (+)= factor[o] · step[t] · (2·Σ_{bit set} q[t] − Σ q[t]) over its
// rows t (StoreProducts). One parallel pass over all jobs' blocks of kRowBlock sign rows
// (static: each thread streams a contiguous run of them); a block's bits (8 KiB for rows of
// 2048) stay in L1 while each of the job's tokens passes.
void SignGemvQ(float* out, const QuantizedTokens& x, const SignJob* jobs, size_t job_count,
               size_t O, size_t I, bool accumulate) {
  const size_t row_bytes = (I + 7) / 8;
  const size_t blocks = (O + kRowBlock - 1) / kRowBlock;
  const size_t work = TotalWork(jobs, job_count, O, I);
#pragma omp parallel for schedule(static) if (work >= size_t(kMinParallelElements))
  for (int64_t item = 0; item < int64_t(job_count * blocks); ++item) {
    const SignJob& job = jobs[size_t(item) / blocks];
    const size_t row0 = (size_t(item) % blocks) * kRowBlock, rows = std::min(kRowBlock, O - row0);
    for (size_t t = job.row0; t < job.row0 + job.rows; ++t) {
      int64_t plus[kRowBlock];
      for (size_t r = 0; r < rows; ++r)
        plus[r] = PlusSumQ(job.bits + (row0 + r) * row_bytes, x.q + t * I, I);
      StoreProducts(out, x, job, t, row0, rows, plus, O, accumulate);
    }
  }
}
#endif

#if BD_SIGN_LUT
// One token's fused pass (GemvSignsTyped above) for W's dtype; from panels (AVX2's, strips of 16
// rows) only where a tile is one strip.
bool GemvSigns(float* out, const float* in, const void* w, DType dtype, const uint32_t* panels,
               const QuantizedTokens& x, const SignJob& job, size_t O, size_t I, bool accumulate) {
  if (panels && kTileRows != kStripRows) return false;
  switch (dtype) {
    case DType::F32:
      GemvSignsTyped(out, in, static_cast<const float*>(w), nullptr, x, job, O, I, accumulate);
      return true;
    case DType::BF16:
      GemvSignsTyped(out, in, static_cast<const hwy::bfloat16_t*>(w), panels, x, job, O, I,
                     accumulate);
      return true;
    case DType::F16:
      GemvSignsTyped(out, in, static_cast<const hwy::float16_t*>(w), nullptr, x, job, O, I,
                     accumulate);
      return true;
    default:
      return false;
  }
}
#else
// Without table lookups the sums cost more than the reads of W they could hide: the caller runs
// the two passes.
bool GemvSigns(float*, const float*, const void*, DType, const uint32_t*, const QuantizedTokens&,
               const SignJob&, size_t, size_t, bool) {
  return false;
}
#endif

// dst[rows, I] = factor[row] · S[row0 + rows, I] as floats (±factor), plus W[row0 + rows, I]
// widened to F32 when w is given (W + factor ⊙ S, the merged rows), or plus dst itself with
// kAddToDst (W already widened there from panels): for the SGEMM path.
template <typename WT, bool kAddToDst = false>
void WidenSignsTyped(float* dst, const WT* w, const uint8_t* bits, const float* scale, bool per_row,
                     size_t row0, size_t rows, size_t I) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const size_t row_bytes = (I + 7) / 8;
#pragma omp parallel for schedule(static) if (rows * I >= size_t(kMinParallelElements))
  for (int64_t r = 0; r < int64_t(rows); ++r) {
    const size_t row = row0 + size_t(r);
    const uint8_t* row_bits = bits + row * row_bytes;
    const float factor = scale ? scale[per_row ? row : 0] : 1.0f;
    const VF plus = hn::Set(df, factor), minus = hn::Set(df, -factor);
    float* d = dst + size_t(r) * I;
    const WT* w_row = w ? w + row * I : nullptr;
    size_t i = 0;
    for (; i + N <= I; i += N) {
      const VF sign = hn::IfThenElse(LoadSignMask(df, row_bits, i), plus, minus);
      if constexpr (kAddToDst)
        hn::StoreU(hn::Add(hn::LoadU(df, d + i), sign), df, d + i);
      else
        hn::StoreU(w_row ? hn::Add(LoadF32(df, w_row + i), sign) : sign, df, d + i);
    }
    for (; i < I; ++i) {
      const float sign = SignBit(row_bits, i) ? factor : -factor;
      if constexpr (kAddToDst)
        d[i] += sign;
      else
        d[i] = w_row ? ScalarF32(w_row + i) + sign : sign;
    }
  }
}

// WidenSignsTyped for W of dtype F32, BF16 or F16, or W's panels (row0 a multiple of 16), or
// no W (null w and panels); false for another dtype.
bool WidenSigns(float* dst, const void* w, DType dtype, const uint32_t* panels, const uint8_t* bits,
                const float* scale, bool per_row, size_t row0, size_t rows, size_t I) {
  if (panels) {
    const int64_t strips = int64_t((rows + kStripRows - 1) / kStripRows);
#pragma omp parallel for schedule(static) if (rows * I >= size_t(kMinParallelElements))
    for (int64_t s = 0; s < strips; ++s) {
      const size_t first = size_t(s) * kStripRows;
      WidenStrip(panels + (row0 + first) / kStripRows * 8 * I, I,
                 std::min(kStripRows, rows - first), dst + first * I);
    }
    WidenSignsTyped<float, /*kAddToDst=*/true>(dst, nullptr, bits, scale, per_row, row0, rows, I);
    return true;
  }
  if (!w) {
    WidenSignsTyped<float>(dst, nullptr, bits, scale, per_row, row0, rows, I);
    return true;
  }
  switch (dtype) {
    case DType::F32:
      WidenSignsTyped(dst, static_cast<const float*>(w), bits, scale, per_row, row0, rows, I);
      return true;
    case DType::BF16:
      WidenSignsTyped(dst, static_cast<const hwy::bfloat16_t*>(w), bits, scale, per_row, row0, rows,
                      I);
      return true;
    case DType::F16:
      WidenSignsTyped(dst, static_cast<const hwy::float16_t*>(w), bits, scale, per_row, row0, rows,
                      I);
      return true;
    default:
      return false;
  }
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/error.h"
#include "kernels/blas.h"
#include "kernels/matmul.h"
#include "kernels/matmul_gemv.h"
#include "kernels/matmul_panels.h"

namespace bd {
HWY_EXPORT(SignGemvQ);
HWY_EXPORT(GemvSigns);
HWY_EXPORT(SignTilesBytes);
HWY_EXPORT(PackSignTiles);
HWY_EXPORT(WidenSigns);
HWY_EXPORT(QuantizeRow);

namespace {

// F32 bytes of widened sign rows per SGEMM call (as matmul's widened blocks: big enough for
// SGEMM's full rate, small enough to stay in cache between widening and multiplying).
constexpr size_t kBlockBytes = size_t(4) << 20;

void check_sign_args(const char* caller, const uint8_t* bits, int64_t T, int64_t O, int64_t I) {
  if (T < 0 || O < 0 || I < 0) fail(caller, ": negative size T=", T, " O=", O, " I=", I);
  // The few-token kernels sum a row in 32-bit lanes (AVX-512 lookups: 8·⌈I/32⌉ bytes of at most
  // 255).
  if (I > kMaxSignColumns) fail(caller, ": rows of ", I, " columns, more than ", kMaxSignColumns);
  if (!bits && O > 0 && I > 0) fail(caller, ": no sign bits");
}

// Rows per widened block; whole strips of 16 when W comes from panels.
int64_t block_rows(int64_t O, int64_t I, bool panels = false) {
  const int64_t rows = std::clamp<int64_t>(int64_t(kBlockBytes / (4 * size_t(I))), 1, O);
  return panels ? std::max<int64_t>(kPanelRows, rows / kPanelRows * kPanelRows) : rows;
}

// out[T, O] = x[T, I] · (W + factor ⊙ S)ᵀ + beta · out (no W: x · (factor ⊙ S)ᵀ), through SGEMM
// on widened row blocks.
void sign_sgemm(const char* caller, float* out, const float* x, const TensorView* weight,
                const uint32_t* panels, const uint8_t* bits, const float* scale, bool per_row,
                int64_t T, int64_t O, int64_t I, float beta) {
  const int64_t rows_per_block = block_rows(O, I, panels != nullptr);
  auto block = hwy::AllocateAligned<float>(size_t(rows_per_block * I));
  for (int64_t row0 = 0; row0 < O; row0 += rows_per_block) {
    const int64_t rows = std::min(rows_per_block, O - row0);
    if (!HWY_DYNAMIC_DISPATCH(WidenSigns)(block.get(), weight ? weight->data : nullptr,
                                          weight ? weight->dtype : DType::F32, panels, bits, scale,
                                          per_row, size_t(row0), size_t(rows), size_t(I)))
      fail(caller, ": weights of dtype ", dtype_name(weight->dtype));
    sgemm(caller, CblasNoTrans, CblasTrans, T, rows, I, 1.0f, x, I, block.get(), I, beta,
          out + row0, O);
  }
}

// x[T, I] quantized per token (QuantizedTokens): step = max|x| / kSignQuantMax, so each q is
// within about step / 2 of x / step and |S·x − step·S·q| ≤ ~I·step / 2 per output.
struct Quantized {
  std::unique_ptr<int16_t[]> q;  // rows no few-token product reads stay uninitialised
  std::vector<float> step;
  std::vector<int64_t> total;
  QuantizedTokens view() const { return {q.get(), step.data(), total.data()}; }
};

// Sized for T rows of I; quantize_rows fills the rows that a few-token product reads.
Quantized quantized_for(int64_t T, int64_t I) {
  Quantized out;
  out.q = std::make_unique_for_overwrite<int16_t[]>(size_t(T * I));
  out.step.resize(size_t(T));
  out.total.assign(size_t(T), 0);
  return out;
}

// Quantizes the rows of x that the jobs read (QuantizedTokens), the rows in parallel.
void quantize_rows(const float* x, const std::vector<SignJob>& jobs, int64_t I, Quantized& out) {
  std::vector<size_t> rows;
  for (const SignJob& job : jobs)
    for (size_t t = job.row0; t < job.row0 + job.rows; ++t) rows.push_back(t);
#pragma omp parallel for schedule(static) if (rows.size() > 1 && \
                                              int64_t(rows.size()) * I >= kMinParallelElements)
  for (int64_t k = 0; k < int64_t(rows.size()); ++k) {
    const size_t t = rows[size_t(k)], at = t * size_t(I);
    HWY_DYNAMIC_DISPATCH(QuantizeRow)
    (x + at, size_t(I), out.q.get() + at, &out.step[t], &out.total[t]);
  }
}

// For each segment: out[rows] (+)= x[rows] · (factor ⊙ S)ᵀ, the few-token ones in one pass.
void sign_products(float* out, const float* x, std::span<const SignSegment> segments, int64_t O,
                   int64_t I, bool accumulate) {
  if (O == 0) return;
  int64_t rows = 0;
  for (const SignSegment& s : segments) rows = std::max(rows, s.row0 + s.rows);
  if (I == 0) {  // empty sums
    if (!accumulate)
      for (const SignSegment& s : segments)
        std::fill(out + s.row0 * O, out + (s.row0 + s.rows) * O, 0.0f);
    return;
  }
  Quantized q = quantized_for(rows, I);
  std::vector<SignJob> jobs;
  for (const SignSegment& s : segments) {
    if (s.rows == 0) continue;
    if (s.rows > s.lookup_max_rows) {
      sign_sgemm("sign_matmul", out + s.row0 * O, x + s.row0 * I, nullptr, nullptr, s.bits, s.scale,
                 s.per_row, s.rows, O, I, accumulate ? 1.0f : 0.0f);
      continue;
    }
    jobs.push_back(SignJob{s.bits, s.scale, s.per_row, size_t(s.row0), size_t(s.rows), s.tiles});
  }
  if (jobs.empty()) return;
  quantize_rows(x, jobs, I, q);
  HWY_DYNAMIC_DISPATCH(SignGemvQ)
  (out, q.view(), jobs.data(), jobs.size(), size_t(O), size_t(I), accumulate);
}

void check_segments(const char* caller, std::span<const SignSegment> segments, bool need_scale,
                    int64_t O, int64_t I) {
  for (const SignSegment& s : segments) {
    check_sign_args(caller, s.bits, s.rows, O, I);
    if (s.row0 < 0) fail(caller, ": negative first row ", s.row0);
    if (need_scale && !s.scale) fail(caller, ": no scale");
  }
}

}  // namespace

void sign_matmul_segments(float* y, const float* x, std::span<const SignSegment> segments,
                          int64_t O, int64_t I) {
  check_segments("sign_matmul_segments", segments, /*need_scale=*/true, O, I);
  sign_products(y, x, segments, O, I, /*accumulate=*/true);
}

int64_t generate_lookup_max_tokens() {
  return amx_available() && amx_enabled() ? kGenerateLookupMaxTokensAmx : kGenerateLookupMaxTokens;
}

int64_t sign_tiles_bytes(int64_t O, int64_t I) {
  if (O < 0 || I < 0) fail("sign_tiles_bytes: negative size O=", O, " I=", I);
  return int64_t(HWY_DYNAMIC_DISPATCH(SignTilesBytes)(size_t(O), size_t(I)));
}

void pack_sign_tiles(const uint8_t* bits, int64_t O, int64_t I, uint8_t* tiles) {
  check_sign_args("pack_sign_tiles", bits, 1, O, I);
  if (sign_tiles_bytes(O, I) > 0 && !tiles) fail("pack_sign_tiles: no output");
  if (reinterpret_cast<uintptr_t>(tiles) % 64 != 0)
    fail("pack_sign_tiles: output not 64-byte aligned");
  HWY_DYNAMIC_DISPATCH(PackSignTiles)(bits, size_t(O), size_t(I), tiles);
}

void matmul_sign_one_token(float* y, const float* x, const TensorView& weight,
                           const SignSegment& signs, bool accumulate, const uint32_t* panels) {
  check_matmul_args("matmul_sign_one_token", weight, 1);
  const int64_t O = weight.dim(0), I = weight.dim(1);
  check_segments("matmul_sign_one_token", {&signs, 1}, /*need_scale=*/true, O, I);
  if (signs.row0 != 0 || signs.rows != 1)
    fail("matmul_sign_one_token: the signs must cover the one token (row0 ", signs.row0, ", rows ",
         signs.rows, ")");
  if (O > 0 && I > 0) {
    Quantized q = quantized_for(1, I);
    const SignJob job{signs.bits, signs.scale, signs.per_row, 0, 1, signs.tiles};
    quantize_rows(x, {job}, I, q);
    if (HWY_DYNAMIC_DISPATCH(GemvSigns)(y, x, weight.data, weight.dtype, panels, q.view(), job,
                                        size_t(O), size_t(I), accumulate))
      return;
  }
  if (panels)
    matmul_panels(y, x, panels, O, I, 1, accumulate);
  else
    matmul(y, x, weight, 1, accumulate);
  sign_products(y, x, {&signs, 1}, O, I, /*accumulate=*/true);
}

void matmul_merged_signs(float* y, const float* x, const TensorView& weight,
                         const SignSegment& signs, bool accumulate, const uint32_t* panels) {
  check_matmul_args("matmul_merged_signs", weight, signs.rows);
  const int64_t O = weight.dim(0), I = weight.dim(1);
  check_segments("matmul_merged_signs", {&signs, 1}, /*need_scale=*/true, O, I);
  if (signs.rows == 0 || O == 0) return;
  float* out = y + signs.row0 * O;
  if (I == 0) {  // empty sums (SGEMM rejects a zero leading dimension)
    if (!accumulate) std::fill(out, out + signs.rows * O, 0.0f);
    return;
  }
  sign_sgemm("matmul_merged_signs", out, x + signs.row0 * I, &weight, panels, signs.bits,
             signs.scale, signs.per_row, signs.rows, O, I, accumulate ? 1.0f : 0.0f);
}

void sign_matmul(float* y, const float* x, const uint8_t* bits, const float* scale, bool per_row,
                 int64_t T, int64_t O, int64_t I) {
  const SignSegment segment{0, T, bits, scale, per_row};
  check_segments("sign_matmul", {&segment, 1}, /*need_scale=*/true, O, I);
  sign_products(y, x, {&segment, 1}, O, I, /*accumulate=*/true);
}

void sign_project(float* sx, const float* x, const uint8_t* bits, int64_t T, int64_t O, int64_t I) {
  const SignSegment segment{0, T, bits, nullptr, false};
  check_segments("sign_project", {&segment, 1}, /*need_scale=*/false, O, I);
  sign_products(sx, x, {&segment, 1}, O, I, /*accumulate=*/false);
}

// Always SGEMM: only training calls this, and with many rows (B·T), where a block of widened rows
// is reused across all of them. dx[T, I] += dy[T, rows of the block] · block[rows, I].
void sign_matmul_backward_x(float* dx, const float* dy, const uint8_t* bits, const float* scale,
                            bool per_row, int64_t T, int64_t O, int64_t I) {
  check_sign_args("sign_matmul_backward_x", bits, T, O, I);
  if (!scale) fail("sign_matmul_backward_x: no scale");
  if (T == 0 || O == 0 || I == 0) return;
  const int64_t rows_per_block = block_rows(O, I);
  auto block = hwy::AllocateAligned<float>(size_t(rows_per_block * I));
  for (int64_t row0 = 0; row0 < O; row0 += rows_per_block) {
    const int64_t rows = std::min(rows_per_block, O - row0);
    HWY_DYNAMIC_DISPATCH(WidenSigns)
    (block.get(), nullptr, DType::F32, nullptr, bits, scale, per_row, size_t(row0), size_t(rows),
     size_t(I));
    sgemm("sign_matmul_backward_x", CblasNoTrans, CblasNoTrans, T, I, rows, 1.0f, dy + row0, O,
          block.get(), I, 1.0f, dx, I);
  }
}

}  // namespace bd
#endif  // HWY_ONCE
