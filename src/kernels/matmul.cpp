#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>

#include "core/error.h"
#include "hwy/aligned_allocator.h"
#include "kernels/matmul_gemv.h"

namespace bd {

namespace {

// F32 bytes of W rows widened per SGEMM call: large enough for SGEMM to reach its full rate,
// small enough to stay in cache between widening and multiplying (L3 is tens of MiB).
constexpr size_t kBlockBytes = size_t(4) << 20;
// Below this many elements a block is widened by one thread (waking the pool costs more).
constexpr int64_t kMinParallelElements = int64_t(1) << 16;

// out[T, O] = in[T, I] · W[O, I]^T + beta · out for BF16/F16 W: widens a block of rows at a
// time into a scratch buffer (never the whole matrix) and hands each block to SGEMM.
void widened_sgemm(float* out, const float* in, const TensorView& weight, int64_t T, float beta) {
  const int64_t O = weight.dim(0), I = weight.dim(1);
  const size_t element = dtype_size(weight.dtype);
  const int64_t block_rows = std::clamp<int64_t>(int64_t(kBlockBytes / (4 * size_t(I))), 1, O);
  auto block = hwy::AllocateAligned<float>(size_t(block_rows * I));
  const auto* rows_bytes = static_cast<const uint8_t*>(weight.data);
  for (int64_t row0 = 0; row0 < O; row0 += block_rows) {
    const int64_t rows = std::min(block_rows, O - row0);
#pragma omp parallel for schedule(static) if (rows * I >= kMinParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      widen_to_f32(weight.dtype, rows_bytes + size_t((row0 + r) * I) * element, block.get() + r * I,
                   size_t(I));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(rows), int(I), 1.0f, in,
                int(I), block.get(), int(I), beta, out + row0, int(O));
  }
}

}  // namespace

void matmul_sgemm(float* out, const float* in, const TensorView& weight, int64_t T,
                  bool accumulate) {
  check_matmul_args("matmul_sgemm", weight, T);
  const int64_t O = weight.dim(0), I = weight.dim(1);
  if (T == 0 || O == 0) return;
  if (I == 0) {  // empty sums (SGEMM rejects a zero leading dimension)
    if (!accumulate) std::fill(out, out + T * O, 0.0f);
    return;
  }
  const float beta = accumulate ? 1.0f : 0.0f;
  if (weight.dtype != DType::F32) return widened_sgemm(out, in, weight, T, beta);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(O), int(I), 1.0f, in, int(I),
              weight.as<float>(), int(I), beta, out, int(O));
}

void matmul(float* out, const float* in, const TensorView& weight, int64_t T, bool accumulate) {
  check_matmul_args("matmul", weight, T);
  if (T <= kGemvMaxTokens) return gemv(out, in, weight, T, accumulate);
  matmul_sgemm(out, in, weight, T, accumulate);
}

}  // namespace bd
