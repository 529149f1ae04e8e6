#include "kernels/blas.h"

#include <climits>

#include "core/error.h"

namespace bd {

int blas_int(int64_t value, const char* caller, const char* what) {
  if (value < 0) fail(caller, ": ", what, " ", value, " is negative");
  if (value > INT_MAX) fail(caller, ": ", what, " ", value, " exceeds BLAS's int range (2^31 - 1)");
  return int(value);
}

void sgemm(const char* caller, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int64_t M,
           int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a, trans_b, blas_int(M, caller, "M"), blas_int(N, caller, "N"),
              blas_int(K, caller, "K"), alpha, A, blas_int(lda, caller, "lda"), B,
              blas_int(ldb, caller, "ldb"), beta, C, blas_int(ldc, caller, "ldc"));
}

}  // namespace bd
