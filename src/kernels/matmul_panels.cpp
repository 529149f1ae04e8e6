#include "kernels/matmul_panels.h"

#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "kernels/parallel.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul_panels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {

constexpr size_t kStripRows = size_t(kPanelRows);
constexpr size_t kTokensPerPass = 6;  // 12 accumulators + 2 widened vectors + 1 broadcast

#undef BD_PANELS_AVX2
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
#define BD_PANELS_AVX2 1
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

// Columns [i, i + 16) of a whole strip (16 rows of w, I apart) into panel[8i ..): the 16-bit
// interleave of rows j and 8 + j gives, per 128-bit lane, the 32-bit values of columns 0–3 | 8–11
// (low) and 4–7 | 12–15 (high); an 8 × 8 transpose of the eight row pairs' vectors then puts each
// column's 8 pairs in one vector.
HWY_INLINE void PackColumns16(const uint16_t* HWY_RESTRICT w, size_t I, size_t i,
                              uint32_t* HWY_RESTRICT panel) {
  __m256 low[8], high[8];  // [j]: rows j and 8 + j
#pragma GCC unroll 8
  for (size_t j = 0; j < 8; ++j) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j * I + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (8 + j) * I + i));
    low[j] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(a, b));
    high[j] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(a, b));
  }
  Transpose8x8(low);   // columns 0, 1, 2, 3, 8, 9, 10, 11
  Transpose8x8(high);  // columns 4, 5, 6, 7, 12, 13, 14, 15
  float* to = reinterpret_cast<float*>(panel + 8 * i);
#pragma GCC unroll 4
  for (size_t c = 0; c < 4; ++c) {
    _mm256_store_ps(to + 8 * c, low[c]);
    _mm256_store_ps(to + 8 * (4 + c), high[c]);
    _mm256_store_ps(to + 8 * (8 + c), low[4 + c]);
    _mm256_store_ps(to + 8 * (12 + c), high[4 + c]);
  }
}
#else
#define BD_PANELS_AVX2 0
#endif

// One strip: `rows` ≤ 16 rows of W (I apart) into its panel (8·I uint32).
void PackStrip(const uint16_t* HWY_RESTRICT w, size_t I, size_t rows,
               uint32_t* HWY_RESTRICT panel) {
  size_t i = 0;
#if BD_PANELS_AVX2
  if (rows == kStripRows)
    for (; i + 16 <= I; i += 16) PackColumns16(w, I, i, panel);
#endif
  for (; i < I; ++i) {
    for (size_t j = 0; j < 8; ++j) {
      const uint32_t low = j < rows ? w[j * I + i] : 0;
      const uint32_t high = 8 + j < rows ? w[(8 + j) * I + i] : 0;
      panel[8 * i + j] = low | high << 16;
    }
  }
}

void PackPanels(const uint16_t* w, size_t O, size_t I, uint32_t* panels) {
  const int64_t strips = int64_t((O + kStripRows - 1) / kStripRows);
#pragma omp parallel for schedule(dynamic, 4) if (O * I >= size_t(kMinParallelElements))
  for (int64_t s = 0; s < strips; ++s) {
    const size_t row0 = size_t(s) * kStripRows;
    PackStrip(w + row0 * I, I, std::min(kStripRows, O - row0), panels + size_t(s) * 8 * I);
  }
}

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

void MatmulPanels(float* out, const float* in, const uint32_t* panels, size_t O, size_t I, size_t T,
                  bool accumulate) {
  const int64_t strips = int64_t((O + kStripRows - 1) / kStripRows);
#pragma omp parallel for schedule(dynamic, 4) if (O * I >= size_t(kMinParallelElements))
  for (int64_t s = 0; s < strips; ++s) {
    const size_t row0 = size_t(s) * kStripRows, rows = std::min(kStripRows, O - row0);
    const uint32_t* panel = panels + size_t(s) * 8 * I;
    const char* next = s + 1 < strips ? reinterpret_cast<const char*>(panel + 8 * I) : nullptr;
    for (size_t t0 = 0; t0 < T; t0 += kTokensPerPass, next = nullptr) {
      const float* in_t = in + t0 * I;
      float* out_t = out + t0 * O;
      switch (std::min(kTokensPerPass, T - t0)) {  // a kernel per token count
        case 1:
          StripTokens<1>(panel, in_t, I, O, row0, rows, out_t, accumulate, next);
          break;
        case 2:
          StripTokens<2>(panel, in_t, I, O, row0, rows, out_t, accumulate, next);
          break;
        case 3:
          StripTokens<3>(panel, in_t, I, O, row0, rows, out_t, accumulate, next);
          break;
        case 4:
          StripTokens<4>(panel, in_t, I, O, row0, rows, out_t, accumulate, next);
          break;
        case 5:
          StripTokens<5>(panel, in_t, I, O, row0, rows, out_t, accumulate, next);
          break;
        default:
          StripTokens<kTokensPerPass>(panel, in_t, I, O, row0, rows, out_t, accumulate, next);
          break;
      }
    }
  }
}

bool PanelsPreferred() {
  return HWY_TARGET == HWY_AVX2;
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/error.h"

namespace bd {
HWY_EXPORT(PackPanels);
HWY_EXPORT(MatmulPanels);
HWY_EXPORT(PanelsPreferred);

int64_t panel_bytes(int64_t O, int64_t I) {
  return (O + kPanelRows - 1) / kPanelRows * I * 32;
}

bool panels_preferred() {
  return HWY_DYNAMIC_DISPATCH(PanelsPreferred)();
}

void pack_panels(const TensorView& weight, uint32_t* panels) {
  if (weight.shape.size() != 2 || weight.dtype != DType::BF16)
    fail("pack_panels: weight must be a 2-D BF16 matrix, got ", dtype_name(weight.dtype), " ",
         shape_str(weight.shape));
  HWY_DYNAMIC_DISPATCH(PackPanels)
  (static_cast<const uint16_t*>(weight.data), size_t(weight.dim(0)), size_t(weight.dim(1)), panels);
}

void matmul_panels(float* out, const float* in, const uint32_t* panels, int64_t O, int64_t I,
                   int64_t T, bool accumulate) {
  if (O < 0 || I < 0 || T < 0) fail("matmul_panels: negative shape");
  if (O == 0 || T == 0) return;
  HWY_DYNAMIC_DISPATCH(MatmulPanels)
  (out, in, panels, size_t(O), size_t(I), size_t(T), accumulate);
}

}  // namespace bd
#endif  // HWY_ONCE
