// The streaming row kernel of the few-token GEMV (x · W[row]ᵀ for up to 4 tokens, W widened from
// BF16/F16 in registers), per SIMD target: include after hwy/highway.h inside a foreach_target
// translation unit. matmul_gemv.cpp streams whole matrices with it; sign_matmul.cpp runs it
// between its packed-sign products in the fused one-token pass.
#if defined(BD_KERNELS_GEMV_ROW_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BD_KERNELS_GEMV_ROW_INL_H_
#undef BD_KERNELS_GEMV_ROW_INL_H_
#else
#define BD_KERNELS_GEMV_ROW_INL_H_
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Software prefetch distances: into L1 one 4 KiB page ahead, where the hardware prefetchers
// (which stop at page boundaries) have not started yet, and into L2 two pages ahead, so that
// more misses are in flight than the core's own loads would keep (widening BF16 makes the loop
// consume a cache line per two loads, too slowly for the demand-driven prefetchers).
constexpr size_t kPrefetchBytes = 4096;
constexpr size_t kPrefetchL2Bytes = 8192;
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

// sums[t] = w[0, I) · in[t, 0, I) for tokens t < kT. One row at a time, so that each thread
// reads W as a single sequential stream: on the machines measured, interleaving several rows'
// streams costs a third or more of the DRAM bandwidth. The row is split into kU interleaved
// parts with their own accumulators, so that about four multiply-adds are in flight.
template <size_t kT, typename WT>
HWY_INLINE void DotRow(const WT* HWY_RESTRICT w, const float* HWY_RESTRICT in, size_t I,
                       float* HWY_RESTRICT sums) {
  constexpr size_t kU = kT == 1 ? 4 : kT == 2 ? 2 : 1;
  const DF df;
  const size_t N = hn::Lanes(df);
  // Loops over parts and tokens are unrolled so that the accumulators live in registers.
  VF acc[kU][kT];
  HWY_UNROLL(4)
  for (size_t u = 0; u < kU; ++u) {
    HWY_UNROLL(4)
    for (size_t t = 0; t < kT; ++t) acc[u][t] = hn::Zero(df);
  }
  size_t i = 0;
  for (; i + kU * N <= I; i += kU * N) {
    const char* here = reinterpret_cast<const char*>(w + i);
    for (size_t b = 0; b < kU * N * sizeof(WT); b += 64) {
      hwy::Prefetch(here + kPrefetchBytes + b);
      __builtin_prefetch(here + kPrefetchL2Bytes + b, 0, 2);  // locality 2: into L2
    }
    HWY_UNROLL(4)
    for (size_t u = 0; u < kU; ++u) {
      const VF wu = LoadF32(df, w + i + u * N);
      HWY_UNROLL(4)
      for (size_t t = 0; t < kT; ++t) {
        acc[u][t] = hn::MulAdd(wu, hn::LoadU(df, in + t * I + i + u * N), acc[u][t]);
      }
    }
  }
  for (; i + N <= I; i += N) {
    const VF wi = LoadF32(df, w + i);
    HWY_UNROLL(4)
    for (size_t t = 0; t < kT; ++t)
      acc[0][t] = hn::MulAdd(wi, hn::LoadU(df, in + t * I + i), acc[0][t]);
  }
  for (size_t t = 0; t < kT; ++t) {
    for (size_t u = 1; u < kU; ++u) acc[0][t] = hn::Add(acc[0][t], acc[u][t]);
    float sum = hn::GetLane(hn::SumOfLanes(df, acc[0][t]));
    for (size_t j = i; j < I; ++j) sum += ScalarF32(w + j) * in[t * I + j];
    sums[t] = sum;
  }
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BD_KERNELS_GEMV_ROW_INL_H_ toggle
