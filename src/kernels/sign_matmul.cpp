// Packed-sign products. Few tokens (decode): each row of sign bits is read once and turned into
// lane masks, and Σ_i S[o, i]·x[i] = 2·Σ_{bit set} x[i] − Σ_i x[i], so the inner loop is one
// masked add per vector (no multiply, no widening). Many tokens (prefill, training): blocks of
// rows are widened to ±scale floats and handed to SGEMM, which reuses each block across tokens.
#include "kernels/sign_matmul.h"

#include <algorithm>
#include <cstddef>

#include "hwy/aligned_allocator.h"
#include "kernels/matmul.h"
#include "kernels/parallel.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/sign_matmul.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/sign_bits-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using MF = hn::Mask<DF>;

// Tokens summed per pass over a sign row (the row stays in L1 between passes).
constexpr size_t kTokens = 4;
// Rows per unit of work for the thread pool (a multiple of every block size in SignRows).
constexpr size_t kRowBlock = 4;

HWY_INLINE bool SignBit(const uint8_t* row_bits, size_t i) {
  return (row_bits[i / 8] >> (i % 8)) & 1;
}

// plus[r·kT + t] = Σ_{i: S[row0 + r, i] = +1} x[t, i] for kR consecutive sign rows (contiguous
// in memory, so still one sequential stream) and kT tokens: each x vector loaded serves kR·kT
// masked adds. Two sets of accumulators, for the even and the odd vectors of a row, keep
// 2·kR·kT independent adds in flight: with one set, the add's latency (4 cycles) held a single
// token to kR adds per latency, half of what the two vector ports can issue.
template <size_t kR, size_t kT>
HWY_INLINE void PlusSums(const uint8_t* HWY_RESTRICT bits, size_t row_bytes,
                         const float* HWY_RESTRICT x, size_t I, float* HWY_RESTRICT plus) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF even[kR][kT], odd[kR][kT];
  HWY_UNROLL(4)
  for (size_t r = 0; r < kR; ++r) {
    HWY_UNROLL(4)
    for (size_t t = 0; t < kT; ++t) even[r][t] = odd[r][t] = hn::Zero(df);
  }
  size_t i = 0;
  for (; i + 2 * N <= I; i += 2 * N) {
    VF x0[kT], x1[kT];
    HWY_UNROLL(4)
    for (size_t t = 0; t < kT; ++t) {
      x0[t] = hn::LoadU(df, x + t * I + i);
      x1[t] = hn::LoadU(df, x + t * I + i + N);
    }
    HWY_UNROLL(4)
    for (size_t r = 0; r < kR; ++r) {
      const MF positive0 = LoadSignMask(df, bits + r * row_bytes, i);
      const MF positive1 = LoadSignMask(df, bits + r * row_bytes, i + N);
      HWY_UNROLL(4)
      for (size_t t = 0; t < kT; ++t) {  // a masked add where the target has one
        even[r][t] = hn::IfThenElse(positive0, hn::Add(even[r][t], x0[t]), even[r][t]);
        odd[r][t] = hn::IfThenElse(positive1, hn::Add(odd[r][t], x1[t]), odd[r][t]);
      }
    }
  }
  for (; i + N <= I; i += N) {
    HWY_UNROLL(4)
    for (size_t r = 0; r < kR; ++r) {
      const MF positive = LoadSignMask(df, bits + r * row_bytes, i);
      HWY_UNROLL(4)
      for (size_t t = 0; t < kT; ++t)
        even[r][t] =
            hn::IfThenElse(positive, hn::Add(even[r][t], hn::LoadU(df, x + t * I + i)), even[r][t]);
    }
  }
  for (size_t r = 0; r < kR; ++r) {
    for (size_t t = 0; t < kT; ++t) {
      float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(even[r][t], odd[r][t])));
      for (size_t j = i; j < I; ++j)
        if (SignBit(bits + r * row_bytes, j)) sum += x[t * I + j];
      plus[r * kT + t] = sum;
    }
  }
}

// out[t, row] (+)= factor[row] · (x[t] · S[row]) for rows row0 .. row0 + kR − 1 and tokens
// t < kT, with totals[t] = Σ_i x[t, i].
template <size_t kR, size_t kT>
HWY_INLINE void SignBlock(const uint8_t* bits, size_t row_bytes, const float* x,
                          const float* totals, size_t I, size_t O, size_t row0, const float* scale,
                          bool per_row, bool accumulate, float* out) {
  float plus[kR * kT];
  PlusSums<kR, kT>(bits + row0 * row_bytes, row_bytes, x, I, plus);
  for (size_t r = 0; r < kR; ++r) {
    const float factor = scale ? scale[per_row ? row0 + r : 0] : 1.0f;
    for (size_t t = 0; t < kT; ++t) {
      const float product = factor * (2.0f * plus[r * kT + t] - totals[t]);
      float* o = out + t * O + row0 + r;
      *o = accumulate ? *o + product : product;
    }
  }
}

// Rows row0 .. row0 + rows − 1 for tokens t < kT, in blocks of kR rows (fewer for more tokens,
// to keep the accumulators in registers).
template <size_t kT>
HWY_INLINE void SignRows(const uint8_t* bits, size_t row_bytes, const float* x, const float* totals,
                         size_t I, size_t O, size_t row0, size_t rows, const float* scale,
                         bool per_row, bool accumulate, float* out) {
  constexpr size_t kR = kT == 1 ? 4 : kT == 2 ? 2 : 1;
  size_t r = 0;
  for (; r + kR <= rows; r += kR)
    SignBlock<kR, kT>(bits, row_bytes, x, totals, I, O, row0 + r, scale, per_row, accumulate, out);
  for (; r < rows; ++r)
    SignBlock<1, kT>(bits, row_bytes, x, totals, I, O, row0 + r, scale, per_row, accumulate, out);
}

// out[T, O] (+)= factor[o] ⊙ (x[T, I] · Sᵀ) for few tokens. factor is scale (per_row: [O]) or
// null for 1. Threads split the rows in blocks of kRowBlock, so each sign byte is read once per
// kTokens tokens.
void SignGemv(float* out, const float* x, const uint8_t* bits, const float* scale, bool per_row,
              size_t T, size_t O, size_t I, bool accumulate) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const size_t row_bytes = (I + 7) / 8;
  float totals[kGemvMaxTokens];  // only that many tokens take this path
  for (size_t t = 0; t < T; ++t) {
    VF sum = hn::Zero(df);
    size_t i = 0;
    for (; i + N <= I; i += N) sum = hn::Add(sum, hn::LoadU(df, x + t * I + i));
    totals[t] = hn::GetLane(hn::SumOfLanes(df, sum));
    for (; i < I; ++i) totals[t] += x[t * I + i];
  }
  const size_t blocks = (O + kRowBlock - 1) / kRowBlock;
#pragma omp parallel for schedule(static) if (O * I >= size_t(kMinParallelElements))
  for (int64_t b = 0; b < int64_t(blocks); ++b) {
    const size_t row0 = size_t(b) * kRowBlock, rows = std::min(kRowBlock, O - row0);
    for (size_t t0 = 0; t0 < T; t0 += kTokens) {
      const float* x_t = x + t0 * I;
      const float* totals_t = totals + t0;
      float* out_t = out + t0 * O;
      switch (std::min(kTokens, T - t0)) {  // a kernel per token count, chosen at compile time
        case 1:
          SignRows<1>(bits, row_bytes, x_t, totals_t, I, O, row0, rows, scale, per_row, accumulate,
                      out_t);
          break;
        case 2:
          SignRows<2>(bits, row_bytes, x_t, totals_t, I, O, row0, rows, scale, per_row, accumulate,
                      out_t);
          break;
        case 3:
          SignRows<3>(bits, row_bytes, x_t, totals_t, I, O, row0, rows, scale, per_row, accumulate,
                      out_t);
          break;
        default:
          SignRows<kTokens>(bits, row_bytes, x_t, totals_t, I, O, row0, rows, scale, per_row,
                            accumulate, out_t);
          break;
      }
    }
  }
}

// dst[rows, I] = factor[row] · S[row0 + rows, I] as floats (±factor), for the SGEMM path.
void WidenSigns(float* dst, const uint8_t* bits, const float* scale, bool per_row, size_t row0,
                size_t rows, size_t I) {
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
    size_t i = 0;
    for (; i + N <= I; i += N)
      hn::StoreU(hn::IfThenElse(LoadSignMask(df, row_bits, i), plus, minus), df, d + i);
    for (; i < I; ++i) d[i] = SignBit(row_bits, i) ? factor : -factor;
  }
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/error.h"
#include "kernels/blas.h"

namespace bd {
HWY_EXPORT(SignGemv);
HWY_EXPORT(WidenSigns);

namespace {

// F32 bytes of widened sign rows per SGEMM call (as matmul's widened blocks: big enough for
// SGEMM's full rate, small enough to stay in cache between widening and multiplying).
constexpr size_t kBlockBytes = size_t(4) << 20;

void check_sign_args(const char* caller, const uint8_t* bits, int64_t T, int64_t O, int64_t I) {
  if (T < 0 || O < 0 || I < 0) fail(caller, ": negative size T=", T, " O=", O, " I=", I);
  if (!bits && O > 0 && I > 0) fail(caller, ": no sign bits");
}

int64_t block_rows(int64_t O, int64_t I) {
  return std::clamp<int64_t>(int64_t(kBlockBytes / (4 * size_t(I))), 1, O);
}

// out[T, O] = x[T, I] · (factor ⊙ S)ᵀ + beta · out, through SGEMM on widened row blocks.
void sign_sgemm(float* out, const float* x, const uint8_t* bits, const float* scale, bool per_row,
                int64_t T, int64_t O, int64_t I, float beta) {
  const int64_t rows_per_block = block_rows(O, I);
  auto block = hwy::AllocateAligned<float>(size_t(rows_per_block * I));
  for (int64_t row0 = 0; row0 < O; row0 += rows_per_block) {
    const int64_t rows = std::min(rows_per_block, O - row0);
    HWY_DYNAMIC_DISPATCH(WidenSigns)
    (block.get(), bits, scale, per_row, size_t(row0), size_t(rows), size_t(I));
    sgemm("sign_matmul", CblasNoTrans, CblasTrans, T, rows, I, 1.0f, x, I, block.get(), I, beta,
          out + row0, O);
  }
}

// out[T, O] (+)= x · (factor ⊙ S)ᵀ on whichever path suits T.
void sign_product(float* out, const float* x, const uint8_t* bits, const float* scale, bool per_row,
                  int64_t T, int64_t O, int64_t I, bool accumulate) {
  if (T == 0 || O == 0) return;
  if (I == 0) {  // empty sums
    if (!accumulate) std::fill(out, out + T * O, 0.0f);
    return;
  }
  if (T <= kGemvMaxTokens) {
    HWY_DYNAMIC_DISPATCH(SignGemv)
    (out, x, bits, scale, per_row, size_t(T), size_t(O), size_t(I), accumulate);
    return;
  }
  sign_sgemm(out, x, bits, scale, per_row, T, O, I, accumulate ? 1.0f : 0.0f);
}

}  // namespace

void sign_matmul(float* y, const float* x, const uint8_t* bits, const float* scale, bool per_row,
                 int64_t T, int64_t O, int64_t I) {
  check_sign_args("sign_matmul", bits, T, O, I);
  if (!scale) fail("sign_matmul: no scale");
  sign_product(y, x, bits, scale, per_row, T, O, I, /*accumulate=*/true);
}

void sign_project(float* sx, const float* x, const uint8_t* bits, int64_t T, int64_t O, int64_t I) {
  check_sign_args("sign_project", bits, T, O, I);
  sign_product(sx, x, bits, nullptr, false, T, O, I, /*accumulate=*/false);
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
    (block.get(), bits, scale, per_row, size_t(row0), size_t(rows), size_t(I));
    sgemm("sign_matmul_backward_x", CblasNoTrans, CblasNoTrans, T, I, rows, 1.0f, dy + row0, O,
          block.get(), I, 1.0f, dx, I);
  }
}

}  // namespace bd
#endif  // HWY_ONCE
