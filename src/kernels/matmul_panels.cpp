#include "kernels/matmul_panels.h"

#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "kernels/parallel.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul_panels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/panel_strip-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {

#if BD_PANELS_AVX2
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
#endif  // BD_PANELS_AVX2

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
