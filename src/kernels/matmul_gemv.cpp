#include "kernels/matmul_gemv.h"

#include <algorithm>
#include <cstring>

#include "core/dtype.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul_gemv.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Rows of W per block: four streams per thread keep the prefetchers busy, and 4 rows × 4
// tokens of accumulators still fit the register file.
constexpr size_t kRows = 4;
// Tokens multiplied per pass over a block of rows (the rows stay in L1 between passes).
constexpr size_t kTokens = 4;

// One vector of W's elements widened to F32: BF16 is the top half of an F32 (a shift), F16
// converts with F16C where the target has it.
HWY_INLINE VF LoadF32(DF df, const float* HWY_RESTRICT p) {
  return hn::LoadU(df, p);
}
HWY_INLINE VF LoadF32(DF df, const hwy::bfloat16_t* HWY_RESTRICT p) {
  return hn::PromoteTo(df, hn::LoadU(hn::Rebind<hwy::bfloat16_t, DF>(), p));
}
HWY_INLINE VF LoadF32(DF df, const hwy::float16_t* HWY_RESTRICT p) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2  // F16C
  return hn::PromoteTo(df, hn::LoadU(hn::Rebind<hwy::float16_t, DF>(), p));
#else
  // Highway 1.0's emulation turns inf and NaN into finite numbers, so convert by hand: the F16
  // bits shifted into F32 position are the value scaled by 2^-112 (exact for subnormals too),
  // except for exponent 31 (inf, NaN), which maps to exponent 255.
  const hn::RebindToSigned<DF> di;  // signed: SSE4 has no unsigned compare
  const auto bits = hn::PromoteTo(
      di, hn::LoadU(hn::Rebind<uint16_t, DF>(), reinterpret_cast<const uint16_t*>(p)));
  const auto magnitude = hn::And(bits, hn::Set(di, 0x7fff));
  const auto sign = hn::ShiftLeft<16>(hn::Xor(bits, magnitude));
  const auto shifted = hn::ShiftLeft<13>(magnitude);
  const VF finite = hn::Mul(hn::BitCast(df, shifted), hn::Set(df, 0x1p112f));
  const auto special = hn::Or(shifted, hn::Set(di, 0x7f800000));
  const auto is_special = hn::RebindMask(df, hn::Gt(magnitude, hn::Set(di, 0x7bff)));
  return hn::Or(hn::IfThenElse(is_special, hn::BitCast(df, special), finite),
                hn::BitCast(df, sign));
#endif
}

// The same for one element (the tail of a row that does not fill a vector).
HWY_INLINE float ScalarF32(const float* p) {
  return *p;
}
HWY_INLINE float ScalarF32(const hwy::bfloat16_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return bf16_to_f32(bits);
}
HWY_INLINE float ScalarF32(const hwy::float16_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return f16_to_f32(bits);
}

// sums[r * kT + t] = W[r, :] · in[t, :] for rows r < kR and tokens t < kT.
// w: kR rows of I elements; in: kT rows of I floats. One accumulator per (row, token).
template <size_t kR, size_t kT, typename WT>
HWY_INLINE void DotBlock(const WT* HWY_RESTRICT w, const float* HWY_RESTRICT in, size_t I,
                         float* HWY_RESTRICT sums) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc[kR][kT];
  for (size_t r = 0; r < kR; ++r) {
    for (size_t t = 0; t < kT; ++t) acc[r][t] = hn::Zero(df);
  }
  size_t i = 0;
  for (; i + N <= I; i += N) {
    VF x[kT];
    for (size_t t = 0; t < kT; ++t) x[t] = hn::LoadU(df, in + t * I + i);
    for (size_t r = 0; r < kR; ++r) {
      const VF wr = LoadF32(df, w + r * I + i);
      for (size_t t = 0; t < kT; ++t) acc[r][t] = hn::MulAdd(wr, x[t], acc[r][t]);
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

// out[t, row0 + r] (+)= W[row0 + r, :] · in[t, :] for rows r < kR and tokens t < kT.
template <size_t kR, size_t kT, typename WT>
HWY_INLINE void BlockToOut(const WT* w, const float* in, size_t I, size_t O, size_t row0,
                           float* out, bool accumulate) {
  float sums[kR * kT];
  DotBlock<kR, kT>(w + row0 * I, in, I, sums);
  for (size_t t = 0; t < kT; ++t) {
    float* out_row = out + t * O + row0;
    for (size_t r = 0; r < kR; ++r) {
      out_row[r] = accumulate ? out_row[r] + sums[r * kT + t] : sums[r * kT + t];
    }
  }
}

// The kernel for `tokens` (1..kTokens) tokens, chosen at compile time.
template <size_t kR, typename WT>
HWY_INLINE void TokensToOut(size_t tokens, const WT* w, const float* in, size_t I, size_t O,
                            size_t row0, float* out, bool accumulate) {
  switch (tokens) {
    case 1:
      return BlockToOut<kR, 1>(w, in, I, O, row0, out, accumulate);
    case 2:
      return BlockToOut<kR, 2>(w, in, I, O, row0, out, accumulate);
    case 3:
      return BlockToOut<kR, 3>(w, in, I, O, row0, out, accumulate);
    default:
      return BlockToOut<kR, kTokens>(w, in, I, O, row0, out, accumulate);
  }
}

// out[T, O] (+)= in[T, I] · W[O, I]^T. Threads split W's rows into contiguous ranges, so each
// streams its share once; every token is multiplied while a block of rows is in L1.
template <typename WT>
void GemvTyped(float* out, const float* in, const WT* w, size_t T, size_t O, size_t I,
               bool accumulate) {
  const int64_t blocks = int64_t((O + kRows - 1) / kRows);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const size_t row0 = size_t(b) * kRows;
    const size_t rows = std::min(kRows, O - row0);
    for (size_t t0 = 0; t0 < T; t0 += kTokens) {
      const size_t tokens = std::min(kTokens, T - t0);
      const float* in_t = in + t0 * I;
      float* out_t = out + t0 * O;
      if (rows == kRows) {
        TokensToOut<kRows>(tokens, w, in_t, I, O, row0, out_t, accumulate);
      } else {
        for (size_t r = row0; r < O; ++r) {
          TokensToOut<1>(tokens, w, in_t, I, O, r, out_t, accumulate);
        }
      }
    }
  }
}

void Gemv(float* out, const float* in, const void* w, DType dtype, size_t T, size_t O, size_t I,
          bool accumulate) {
  switch (dtype) {
    case DType::F32:
      return GemvTyped(out, in, static_cast<const float*>(w), T, O, I, accumulate);
    case DType::BF16:
      return GemvTyped(out, in, static_cast<const hwy::bfloat16_t*>(w), T, O, I, accumulate);
    default:  // F16 (bd::gemv checked the dtype)
      return GemvTyped(out, in, static_cast<const hwy::float16_t*>(w), T, O, I, accumulate);
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

namespace {
void check_float(DType dtype, const char* what) {
  if (!is_float(dtype))
    fail(what, ": weight dtype must be F32, BF16 or F16, got ", dtype_name(dtype));
}
}  // namespace

void gemv(float* out, const float* in, const TensorView& weight, int64_t T, bool accumulate) {
  check_float(weight.dtype, "gemv");
  if (weight.shape.size() != 2) fail("gemv: weight must be 2-D, got ", shape_str(weight.shape));
  HWY_DYNAMIC_DISPATCH(Gemv)
  (out, in, weight.data, weight.dtype, size_t(T), size_t(weight.dim(0)), size_t(weight.dim(1)),
   accumulate);
}

void widen_to_f32(DType dtype, const void* src, float* dst, size_t n) {
  check_float(dtype, "widen_to_f32");
  HWY_DYNAMIC_DISPATCH(Widen)(dtype, src, dst, n);
}

}  // namespace bd
#endif  // HWY_ONCE
