#include "model/linear.h"

#include "kernels/blas.h"
#include "kernels/matmul.h"
#include "kernels/matmul_dx.h"
#include "kernels/sign_matmul.h"

namespace bd {

void linear_forward(float* y, const float* x, const Linear& linear, int64_t rows, bool accumulate) {
  matmul(y, x, linear.weight, rows, accumulate);
  if (linear.has_delta()) {
    const SignDelta& d = linear.delta;
    sign_matmul(y, x, d.bits, d.scale, d.per_row, rows, linear.out_features(),
                linear.in_features());
  }
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const Linear& linear,
                     int64_t rows, bool accumulate_dx) {
  const int64_t O = linear.out_features(), I = linear.in_features();
  if (dx) {  // dx[rows, I] (+)= dy[rows, O] · W[O, I] (+ dy ⊙ γ · S)
    matmul_dx(dx, dy, linear.weight, rows, accumulate_dx);
    if (linear.has_delta()) {
      const SignDelta& d = linear.delta;
      sign_matmul_backward_x(dx, dy, d.bits, d.scale, d.per_row, rows, O, I);
    }
  }
  if (dW && rows > 0) {  // dW[O, I] += dy[rows, O]ᵀ · x[rows, I]
    sgemm("linear_backward", CblasTrans, CblasNoTrans, O, I, rows, 1.0f, dy, O, x, I, 1.0f, dW, I);
  }
}

}  // namespace bd
