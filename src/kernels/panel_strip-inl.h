// The strip kernels of BF16 panels (kernels/matmul_panels.h), per SIMD target: include after
// hwy/highway.h inside a foreach_target translation unit. matmul_panels.cpp runs them over whole
// matrices; sign_matmul.cpp runs them in the fused one-token pass and widens strips for SGEMM.
#if defined(BD_KERNELS_PANEL_STRIP_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BD_KERNELS_PANEL_STRIP_INL_H_
#undef BD_KERNELS_PANEL_STRIP_INL_H_
#else
#define BD_KERNELS_PANEL_STRIP_INL_H_
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "hwy/highway.h"
#include "kernels/matmul_panels.h"

#undef BD_PANELS_AVX2
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
#define BD_PANELS_AVX2 1
#else
#define BD_PANELS_AVX2 0
#endif

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {

constexpr size_t kStripRows = size_t(kPanelRows);
constexpr size_t kTokensPerPass = 6;  // 12 accumulators + 2 widened vectors + 1 broadcast

#if BD_PANELS_AVX2
// The 8 × 8 transpose of 32-bit elements: v[k] becomes the vector of element k of the eight.
HWY_INLINE void Transpose8x8(__m256 v[8]) {
  __m256 t[8], s[8];
#pragma GCC unroll 4
  for (size_t j = 0; j < 8; j += 2) {
    t[j] = _mm256_unpacklo_ps(v[j], v[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(v[j], v[j + 1]);
  }
#pragma GCC unroll 2
  for (size_t j = 0; j < 8; j += 4) {
    s[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
    s[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xEE);
    s[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
    s[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (size_t c = 0; c < 4; ++c) {
    v[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
    v[4 + c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
  }
}

#endif  // BD_PANELS_AVX2

// out[t, row0 + r] (+)= W[row0 + r, :] · in[t, :] for r < rows (≤ 16), t < kT, from the strip's
// panel. `next` (or null): the following strip's panel, prefetched a line every second column
// so that it arrives while this one computes.
template <size_t kT>
HWY_INLINE void StripTokens(const uint32_t* HWY_RESTRICT panel, const float* HWY_RESTRICT in,
                            size_t I, size_t O, size_t row0, size_t rows, float* out,
                            bool accumulate, const char* next) {
  float sums[kT][kStripRows];
#if BD_PANELS_AVX2
  const __m256i high_half = _mm256_set1_epi32(int32_t(0xFFFF0000u));
  __m256 acc[kT][2];  // unrolled loops over tokens keep these in registers
#pragma GCC unroll 6
  for (size_t t = 0; t < kT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (size_t i = 0; i < I; ++i) {
    if (next && i % 2 == 0) __builtin_prefetch(next + 32 * i, 0, 2);
    const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + 8 * i));
    const __m256 low_rows = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    const __m256 high_rows = _mm256_castsi256_ps(_mm256_and_si256(w, high_half));
#pragma GCC unroll 6
    for (size_t t = 0; t < kT; ++t) {
      const __m256 x = _mm256_broadcast_ss(in + t * I + i);
      acc[t][0] = _mm256_fmadd_ps(low_rows, x, acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(high_rows, x, acc[t][1]);
    }
  }
#pragma GCC unroll 6
  for (size_t t = 0; t < kT; ++t) {
    _mm256_storeu_ps(sums[t], acc[t][0]);
    _mm256_storeu_ps(sums[t] + 8, acc[t][1]);
  }
#else
  (void)next;
  for (size_t t = 0; t < kT; ++t) std::fill_n(sums[t], kStripRows, 0.0f);
  for (size_t i = 0; i < I; ++i) {
    for (size_t j = 0; j < 8; ++j) {
      const uint32_t pair = panel[8 * i + j];
      const float low = bf16_to_f32(uint16_t(pair)), high = bf16_to_f32(uint16_t(pair >> 16));
      for (size_t t = 0; t < kT; ++t) {
        sums[t][j] += low * in[t * I + i];
        sums[t][8 + j] += high * in[t * I + i];
      }
    }
  }
#endif
  for (size_t t = 0; t < kT; ++t) {
    float* o = out + t * O + row0;
    for (size_t r = 0; r < rows; ++r) o[r] = accumulate ? o[r] + sums[t][r] : sums[t][r];
  }
}

// dst[r, i] = W[row0 + r, i] as F32 for r < rows (≤ 16), i < I, from the strip's panel (dst
// rows I apart).
HWY_INLINE void WidenStrip(const uint32_t* HWY_RESTRICT panel, size_t I, size_t rows,
                           float* HWY_RESTRICT dst) {
  size_t i = 0;
#if BD_PANELS_AVX2
  // 8 columns at a time: each column's vector widens to rows 0–7 and 8–15, and an 8 × 8
  // transpose of each half turns the 8 columns into 8 rows' runs.
  if (rows == kStripRows) {
    const __m256i high_half = _mm256_set1_epi32(int32_t(0xFFFF0000u));
    for (; i + 8 <= I; i += 8) {
      __m256 low[8], high[8];
#pragma GCC unroll 8
      for (size_t c = 0; c < 8; ++c) {
        const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + 8 * (i + c)));
        low[c] = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
        high[c] = _mm256_castsi256_ps(_mm256_and_si256(w, high_half));
      }
      Transpose8x8(low);
      Transpose8x8(high);
#pragma GCC unroll 8
      for (size_t j = 0; j < 8; ++j) {
        _mm256_storeu_ps(dst + j * I + i, low[j]);
        _mm256_storeu_ps(dst + (8 + j) * I + i, high[j]);
      }
    }
  }
#endif
  for (; i < I; ++i) {
    for (size_t j = 0; j < 8; ++j) {
      const uint32_t pair = panel[8 * i + j];
      if (j < rows) dst[j * I + i] = bf16_to_f32(uint16_t(pair));
      if (8 + j < rows) dst[(8 + j) * I + i] = bf16_to_f32(uint16_t(pair >> 16));
    }
  }
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BD_KERNELS_PANEL_STRIP_INL_H_ toggle
