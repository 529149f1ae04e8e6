#include "kernels/matmul.h"

#include <algorithm>

#include "core/error.h"
#include "hwy/aligned_allocator.h"
#include "kernels/blas.h"
#include "kernels/matmul_amx.h"
#include "kernels/matmul_gemv.h"

namespace bd {

namespace {

// out[T, O] = in[T, I] · W[O, I]^T + beta · out for BF16/F16 W: widens a block of rows at a
// time into a scratch buffer (never the whole matrix) and hands each block to SGEMM.
void widened_sgemm(float* out, const float* in, const TensorView& weight, int64_t T, float beta) {
  const int64_t O = weight.dim(0), I = weight.dim(1);
  const int64_t block_rows = widened_block_rows(O, I);
  auto block = hwy::AllocateAligned<float>(size_t(block_rows * I));
  for (int64_t row0 = 0; row0 < O; row0 += block_rows) {
    const int64_t rows = std::min(block_rows, O - row0);
    widen_rows(weight, row0, rows, block.get());
    sgemm("matmul", CblasNoTrans, CblasTrans, T, rows, I, 1.0f, in, I, block.get(), I, beta,
          out + row0, O);
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
  sgemm("matmul", CblasNoTrans, CblasTrans, T, O, I, 1.0f, in, I, weight.as<float>(), I, beta, out,
        O);
}

void matmul(float* out, const float* in, const TensorView& weight, int64_t T, bool accumulate) {
  check_matmul_args("matmul", weight, T);
  if (matmul_amx(out, in, weight, T, accumulate)) return;
  if (T <= kGemvMaxTokens) return gemv(out, in, weight, T, accumulate);
  matmul_sgemm(out, in, weight, T, accumulate);
}

}  // namespace bd
