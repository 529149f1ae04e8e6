// The one door to SGEMM. OpenBLAS takes sizes and leading dimensions as `int`; every one is
// checked here before it is narrowed, so a size past 2^31 − 1 is a clear error, never a wrapped
// negative that BLAS would read as garbage.
#pragma once
#include <cblas.h>

#include <cstdint>

namespace bd {

// `value` as BLAS's int; throws bd::Error "<caller>: <what> <value> exceeds BLAS's int range"
// (or is negative).
int blas_int(int64_t value, const char* caller, const char* what);

// C[M, N] = alpha · op(A)[M, K] · op(B)[K, N] + beta · C, row-major, with leading dimensions
// lda, ldb, ldc. Throws bd::Error naming `caller` when a size does not fit BLAS's int. Inside an
// OpenMP region call it only with sizes already checked by blas_int (an exception must not
// escape the region).
void sgemm(const char* caller, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int64_t M,
           int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace bd
