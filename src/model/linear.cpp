#include "model/linear.h"

#include <cblas.h>

#include "core/error.h"
#include "kernels/matmul.h"

namespace bd {

void linear_forward(float* y, const float* x, const Linear& linear, int64_t rows, bool accumulate) {
  matmul(y, x, linear.weight, rows, accumulate);
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const Linear& linear,
                     int64_t rows, bool accumulate_dx) {
  if (linear.weight.dtype != DType::F32)
    fail(linear.name, ": backward needs F32 weights, got ", dtype_name(linear.weight.dtype));
  const int O = int(linear.out_features()), I = int(linear.in_features()), R = int(rows);
  if (dx) {  // dx[R, I] = dy[R, O] · W[O, I]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, I, O, 1.0f, dy, O,
                linear.weight.as<float>(), I, accumulate_dx ? 1.0f : 0.0f, dx, I);
  }
  // dW[O, I] += dy[R, O]ᵀ · x[R, I]
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, R, 1.0f, dy, O, x, I, 1.0f, dW, I);
}

}  // namespace bd
