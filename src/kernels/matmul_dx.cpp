#include "kernels/matmul_dx.h"

#include <algorithm>

#include "hwy/aligned_allocator.h"
#include "kernels/blas.h"
#include "kernels/matmul_gemv.h"

namespace bd {

void matmul_dx(float* dx, const float* dy, const TensorView& weight, int64_t T, bool accumulate) {
  check_matmul_args("matmul_dx", weight, T);
  const int64_t O = weight.dim(0), I = weight.dim(1);
  if (T == 0 || I == 0) return;
  if (O == 0) {  // empty sums (SGEMM rejects a zero inner dimension)
    if (!accumulate) std::fill(dx, dx + T * I, 0.0f);
    return;
  }
  if (weight.dtype == DType::F32) {
    sgemm("matmul_dx", CblasNoTrans, CblasNoTrans, T, I, O, 1.0f, dy, O, weight.as<float>(), I,
          accumulate ? 1.0f : 0.0f, dx, I);
    return;
  }
  // dx = Σ over row blocks of dy[T, block rows] · W[block rows, I]; the first block overwrites.
  const int64_t block_rows = widened_block_rows(O, I);
  auto block = hwy::AllocateAligned<float>(size_t(block_rows * I));
  for (int64_t row0 = 0; row0 < O; row0 += block_rows) {
    const int64_t rows = std::min(block_rows, O - row0);
    widen_rows(weight, row0, rows, block.get());
    const float beta = accumulate || row0 > 0 ? 1.0f : 0.0f;
    sgemm("matmul_dx", CblasNoTrans, CblasNoTrans, T, I, rows, 1.0f, dy + row0, O, block.get(), I,
          beta, dx, I);
  }
}

}  // namespace bd
