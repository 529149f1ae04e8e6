#include "kernels/sign_pack.h"

#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/matmul_gemv.h"
#include "kernels/parallel.h"
#include "kernels/sign_matmul.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/sign_pack.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/sign_bits-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using MF = hn::Mask<DF>;

// F32 partial sums of |δ| run over at most this many vectors per lane before they are added
// into a double, so that long rows keep the scale accurate to about 1e-7.
constexpr size_t kVectorsPerPartialSum = 64;

// One row of F32 weights: sign bits of δ = ft − base into a zeroed row, returns Σ |δ|.
double PackRow(const float* HWY_RESTRICT base, const float* HWY_RESTRICT ft, size_t in,
               uint8_t* HWY_RESTRICT row_bits) {
  const DF df;
  const size_t N = hn::Lanes(df);
  double total = 0;
  size_t j = 0;
  while (j + N <= in) {
    VF abs_sum = hn::Zero(df);
    for (size_t v = 0; v < kVectorsPerPartialSum && j + N <= in; ++v, j += N) {
      const VF delta = hn::Sub(hn::LoadU(df, ft + j), hn::LoadU(df, base + j));
      abs_sum = hn::Add(abs_sum, hn::Abs(delta));
      StoreSignMask(df, hn::Ge(delta, hn::Zero(df)), row_bits, j);
    }
    total += hn::GetLane(hn::SumOfLanes(df, abs_sum));
  }
  for (; j < in; ++j) {
    const float delta = ft[j] - base[j];
    total += std::fabs(delta);
    row_bits[j / 8] |= uint8_t(uint8_t(delta >= 0.0f) << (j % 8));
  }
  return total;
}

// row_out[in] = base + (S ? +γ : −γ), in F32.
void AddSignsRow(const float* HWY_RESTRICT base, const uint8_t* HWY_RESTRICT row_bits, float scale,
                 size_t in, float* HWY_RESTRICT row_out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const VF plus = hn::Set(df, scale), minus = hn::Set(df, -scale);
  size_t j = 0;
  for (; j + N <= in; j += N) {
    const MF positive = LoadSignMask(df, row_bits, j);
    hn::StoreU(hn::Add(hn::LoadU(df, base + j), hn::IfThenElse(positive, plus, minus)), df,
               row_out + j);
  }
  for (; j < in; ++j) row_out[j] = base[j] + ((row_bits[j / 8] >> (j % 8)) & 1 ? scale : -scale);
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bd {
HWY_EXPORT(PackRow);
HWY_EXPORT(AddSignsRow);

namespace {

// A row of a stored matrix as F32: F32 rows are used in place, others widened into `buffer`.
const float* row_f32(DType dtype, const void* matrix, int64_t row, int64_t in, float* buffer) {
  const size_t offset = size_t(row) * size_t(in);
  if (dtype == DType::F32) return static_cast<const float*>(matrix) + offset;
  widen_to_f32(dtype, static_cast<const uint8_t*>(matrix) + offset * dtype_size(dtype), buffer,
               size_t(in));
  return buffer;
}

}  // namespace

void pack_delta_signs(DType dtype, const void* base, const void* finetune, int64_t rows, int64_t in,
                      uint8_t* bits, double* abs_sums) {
  const int64_t row_bytes = sign_row_bytes(in);
  std::memset(bits, 0, size_t(rows * row_bytes));
  std::vector<float> base_row(static_cast<size_t>(in)), ft_row(static_cast<size_t>(in));
  for (int64_t r = 0; r < rows; ++r)
    abs_sums[r] = HWY_DYNAMIC_DISPATCH(PackRow)(row_f32(dtype, base, r, in, base_row.data()),
                                                row_f32(dtype, finetune, r, in, ft_row.data()),
                                                size_t(in), bits + r * row_bytes);
}

void mean_abs_scales(const double* abs_sums, int64_t rows, int64_t in, bool per_row, float* scale) {
  if (per_row) {
    for (int64_t r = 0; r < rows; ++r) scale[r] = float(abs_sums[r] / double(in));
    return;
  }
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) total += abs_sums[r];
  scale[0] = float(total / (double(rows) * double(in)));
}

void add_scaled_signs(DType base_dtype, const void* base, const uint8_t* bits, const float* scale,
                      bool per_row, int64_t rows, int64_t in, DType out_dtype, void* out) {
  const int64_t row_bytes = sign_row_bytes(in);
  const bool parallel = rows * in >= kMinParallelWork;
#pragma omp parallel if (parallel)
  {
    std::vector<float> base_row(static_cast<size_t>(in)), sum_row(static_cast<size_t>(in));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      HWY_DYNAMIC_DISPATCH(AddSignsRow)
      (row_f32(base_dtype, base, r, in, base_row.data()), bits + r * row_bytes,
       scale[per_row ? r : 0], size_t(in), sum_row.data());
      from_f32(out_dtype, sum_row.data(),
               static_cast<uint8_t*>(out) + size_t(r * in) * dtype_size(out_dtype), size_t(in));
    }
  }
}

}  // namespace bd
#endif  // HWY_ONCE
