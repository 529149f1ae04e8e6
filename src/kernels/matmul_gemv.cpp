#include "kernels/matmul_gemv.h"

#include <algorithm>
#include <cstring>

#include <omp.h>

#include "core/dtype.h"
#include "kernels/parallel.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul_gemv.cpp"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/gemv_row-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {  // hn, DF and VF come from gemv_row-inl.h

// Tokens multiplied per pass over a row (the row stays in L1 between passes).
constexpr size_t kTokens = 4;
// Bytes of W a thread takes at a time: up to 1 MiB, so that each thread's stream runs long
// between jumps (every jump restarts the prefetchers: with 64 KiB chunks decode reached 65–73%
// of the bandwidth limit, with these 78–83%; docs/benchmarks.md), but at least 4 chunks per
// thread, so that a preempted thread (shared cores) holds up little and small matrices still
// use every thread.
constexpr size_t kMaxChunkBytes = size_t(1) << 20;
constexpr size_t kMinChunkBytes = size_t(64) << 10;

// out[t, row] (+)= W[row, :] · in[t, :] for tokens t < kT.
template <size_t kT, typename WT>
HWY_INLINE void RowToOut(const WT* w, const float* in, size_t I, size_t O, size_t row, float* out,
                         bool accumulate) {
  float sums[kT];
  DotRow<kT>(w + row * I, in, I, sums);
  for (size_t t = 0; t < kT; ++t) {
    float* o = out + t * O + row;
    *o = accumulate ? *o + sums[t] : sums[t];
  }
}

// out[T, O] (+)= in[T, I] · W[O, I]^T. Threads take chunks of consecutive rows (64 KiB – 1 MiB
// of W each) as they go, so each streams its rows sequentially, and a thread that the OS
// preempts holds up at most one chunk; every token is multiplied while a row is in L1.
template <typename WT>
void GemvTyped(float* out, const float* in, const WT* w, size_t T, size_t O, size_t I,
               bool accumulate) {
  // Whole 64-byte lines of `out` (16 rows) per chunk, so that two threads write the same line
  // at most at a chunk's edge instead of all the time (rows of 11 KB would give 5-row chunks).
  const size_t line_rows = 64 / sizeof(float);
  const size_t chunk_bytes = std::clamp(O * I * sizeof(WT) / (4 * size_t(omp_get_max_threads())),
                                        kMinChunkBytes, kMaxChunkBytes);
  const int64_t chunk_rows =
      int64_t(std::max<size_t>(1, chunk_bytes / (I * sizeof(WT) + 1) / line_rows) * line_rows);
#pragma omp parallel for schedule(dynamic, chunk_rows) if (O * I >= size_t(kMinParallelElements))
  for (int64_t r = 0; r < int64_t(O); ++r) {
    const size_t row = size_t(r);
    for (size_t t0 = 0; t0 < T; t0 += kTokens) {
      const float* in_t = in + t0 * I;
      float* out_t = out + t0 * O;
      switch (std::min(kTokens, T - t0)) {  // a kernel per token count, chosen at compile time
        case 1:
          RowToOut<1>(w, in_t, I, O, row, out_t, accumulate);
          break;
        case 2:
          RowToOut<2>(w, in_t, I, O, row, out_t, accumulate);
          break;
        case 3:
          RowToOut<3>(w, in_t, I, O, row, out_t, accumulate);
          break;
        default:
          RowToOut<kTokens>(w, in_t, I, O, row, out_t, accumulate);
          break;
      }
    }
  }
}

// ---- Tiles: kTileRows rows × kTileTokens tokens per pass (batched decode, short prompts) ----

// With four or more tokens the products, not the reads of W, set the pace (a token costs a
// widening per vector of W shared by all tokens, and a multiply-add each): a register tile of
// rows × tokens loads each widened vector of W once for kTileTokens tokens and each vector of x
// once for kTileRows rows. 6 × 4 accumulators fill 24 of AVX-512's 32 registers; targets with
// 16 registers take 3 rows. Measured on 5632 × 2048 BF16 (2 threads, Zen 5): T = 16 at 222
// GFLOP/s, T = 64 at 298, against 189 for OpenBLAS SGEMM on F32 (docs/benchmarks.md).
constexpr size_t kTileRows = HWY_MAX_BYTES >= 64 ? 6 : 3;
constexpr size_t kTileTokens = 4;

// sums[r·kT + t] = w[r, 0, I) · in[t, 0, I) for kR rows of W (I apart) and kT tokens.
template <size_t kR, size_t kT, typename WT>
HWY_INLINE void TileDots(const WT* HWY_RESTRICT w, const float* HWY_RESTRICT in, size_t I,
                         float* HWY_RESTRICT sums) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc[kR][kT];
  HWY_UNROLL(6)
  for (size_t r = 0; r < kR; ++r) {
    HWY_UNROLL(4)
    for (size_t t = 0; t < kT; ++t) acc[r][t] = hn::Zero(df);
  }
  size_t i = 0;
  for (; i + N <= I; i += N) {
    VF wr[kR];
    HWY_UNROLL(6)
    for (size_t r = 0; r < kR; ++r) wr[r] = LoadF32(df, w + r * I + i);
    HWY_UNROLL(4)
    for (size_t t = 0; t < kT; ++t) {
      const VF xt = hn::LoadU(df, in + t * I + i);
      HWY_UNROLL(6)
      for (size_t r = 0; r < kR; ++r) acc[r][t] = hn::MulAdd(wr[r], xt, acc[r][t]);
    }
  }
  for (size_t r = 0; r < kR; ++r) {
    for (size_t t = 0; t < kT; ++t) {
      float sum = hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
      for (size_t j = i; j < I; ++j) sum += ScalarF32(w + r * I + j) * in[t * I + j];
      sums[r * kT + t] = sum;
    }
  }
}

// out[t, row0 + r] (+)= W[row0 + r, :] · in[t, :] for r < kR, t < kT.
template <size_t kR, size_t kT, typename WT>
HWY_INLINE void TileToOut(const WT* w, const float* in, size_t I, size_t O, size_t row0, float* out,
                          bool accumulate) {
  float sums[kR * kT];
  TileDots<kR, kT>(w + row0 * I, in, I, sums);
  for (size_t r = 0; r < kR; ++r) {
    for (size_t t = 0; t < kT; ++t) {
      float* o = out + t * O + row0 + r;
      *o = accumulate ? *o + sums[r * kT + t] : sums[r * kT + t];
    }
  }
}

// Rows row0 .. row0 + kR − 1 for tokens t0 .. t0 + tokens − 1 (tokens ≤ kTileTokens).
template <size_t kR, typename WT>
HWY_INLINE void TileRows(const WT* w, const float* in, size_t I, size_t O, size_t row0,
                         size_t tokens, float* out, bool accumulate) {
  switch (tokens) {  // a kernel per token count, chosen at compile time
    case 1:
      return TileToOut<kR, 1>(w, in, I, O, row0, out, accumulate);
    case 2:
      return TileToOut<kR, 2>(w, in, I, O, row0, out, accumulate);
    case 3:
      return TileToOut<kR, 3>(w, in, I, O, row0, out, accumulate);
    default:
      return TileToOut<kR, kTileTokens>(w, in, I, O, row0, out, accumulate);
  }
}

// out[T, O] (+)= in[T, I] · W[O, I]^T by tiles. Threads take blocks of kTileRows rows, a few
// at a time; each block's rows stay in L1 while every group of kTileTokens tokens passes over
// them.
template <typename WT>
void TiledTyped(float* out, const float* in, const WT* w, size_t T, size_t O, size_t I,
                bool accumulate) {
  const int64_t blocks = int64_t((O + kTileRows - 1) / kTileRows);
#pragma omp parallel for schedule(dynamic, 8) if (O * I >= size_t(kMinParallelElements))
  for (int64_t b = 0; b < blocks; ++b) {
    const size_t row0 = size_t(b) * kTileRows;
    for (size_t t0 = 0; t0 < T; t0 += kTileTokens) {
      const size_t tokens = std::min(kTileTokens, T - t0);
      if (row0 + kTileRows <= O) {
        TileRows<kTileRows>(w, in + t0 * I, I, O, row0, tokens, out + t0 * O, accumulate);
      } else {
        for (size_t row = row0; row < O; ++row)
          TileRows<1>(w, in + t0 * I, I, O, row, tokens, out + t0 * O, accumulate);
      }
    }
  }
}

// The streaming kernel for fewer tokens than this (memory-bound: one sequential stream of W per
// thread reads fastest), tiles from here on.
constexpr size_t kTiledMinTokens = 4;

template <typename WT>
void GemvOrTiles(float* out, const float* in, const WT* w, size_t T, size_t O, size_t I,
                 bool accumulate) {
  if (T < kTiledMinTokens) return GemvTyped(out, in, w, T, O, I, accumulate);
  TiledTyped(out, in, w, T, O, I, accumulate);
}

void Gemv(float* out, const float* in, const void* w, DType dtype, size_t T, size_t O, size_t I,
          bool accumulate) {
  switch (dtype) {
    case DType::F32:
      return GemvOrTiles(out, in, static_cast<const float*>(w), T, O, I, accumulate);
    case DType::BF16:
      return GemvOrTiles(out, in, static_cast<const hwy::bfloat16_t*>(w), T, O, I, accumulate);
    default:  // F16 (bd::gemv checked the dtype)
      return GemvOrTiles(out, in, static_cast<const hwy::float16_t*>(w), T, O, I, accumulate);
  }
}

template <typename WT>
void WidenTyped(const WT* HWY_RESTRICT src, float* HWY_RESTRICT dst, size_t n) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(LoadF32(df, src + i), df, dst + i);
  for (; i < n; ++i) dst[i] = ScalarF32(src + i);
}

void Widen(DType dtype, const void* src, float* dst, size_t n) {
  switch (dtype) {
    case DType::F32:
      return WidenTyped(static_cast<const float*>(src), dst, n);
    case DType::BF16:
      return WidenTyped(static_cast<const hwy::bfloat16_t*>(src), dst, n);
    default:
      return WidenTyped(static_cast<const hwy::float16_t*>(src), dst, n);
  }
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/error.h"

namespace bd {
HWY_EXPORT(Gemv);
HWY_EXPORT(Widen);

void check_matmul_args(const char* caller, const TensorView& weight, int64_t T) {
  if (weight.shape.size() != 2) fail(caller, ": weight must be 2-D, got ", shape_str(weight.shape));
  if (!is_float(weight.dtype)) {
    fail(caller, ": weight dtype must be F32, BF16 or F16, got ", dtype_name(weight.dtype));
  }
  if (T < 0) fail(caller, ": negative token count ", T);
}

void gemv(float* out, const float* in, const TensorView& weight, int64_t T, bool accumulate) {
  check_matmul_args("gemv", weight, T);
  HWY_DYNAMIC_DISPATCH(Gemv)
  (out, in, weight.data, weight.dtype, size_t(T), size_t(weight.dim(0)), size_t(weight.dim(1)),
   accumulate);
}

void widen_to_f32(DType dtype, const void* src, float* dst, size_t n) {
  if (!is_float(dtype))
    fail("widen_to_f32: dtype must be F32, BF16 or F16, got ", dtype_name(dtype));
  HWY_DYNAMIC_DISPATCH(Widen)(dtype, src, dst, n);
}

int64_t widened_block_rows(int64_t O, int64_t I) {
  constexpr size_t kBlockBytes = size_t(4) << 20;
  return std::clamp<int64_t>(int64_t(kBlockBytes / (4 * size_t(std::max<int64_t>(I, 1)))), 1,
                             std::max<int64_t>(O, 1));
}

void widen_rows(const TensorView& weight, int64_t row0, int64_t rows, float* block) {
  const int64_t I = weight.dim(1);
  const size_t element = dtype_size(weight.dtype);
  const auto* rows_bytes = static_cast<const uint8_t*>(weight.data);
#pragma omp parallel for schedule(static) if (rows * I >= kMinParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    widen_to_f32(weight.dtype, rows_bytes + size_t((row0 + r) * I) * element, block + r * I,
                 size_t(I));
  }
}

}  // namespace bd
#endif  // HWY_ONCE
