#include "kernels/matmul.h"

#include <cblas.h>

#include <vector>

#include "core/error.h"

namespace bd {

void matmul(float* out, const float* in, const TensorView& weight, int64_t T, bool accumulate) {
  if (weight.shape.size() != 2) fail("matmul: weight must be 2-D, got ", shape_str(weight.shape));
  const int64_t O = weight.dim(0), I = weight.dim(1);
  const float beta = accumulate ? 1.0f : 0.0f;
  if (weight.dtype == DType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(O), int(I), 1.0f, in, int(I),
                weight.as<float>(), int(I), beta, out, int(O));
    return;
  }
  // First version: widen W to F32 and call sgemm (to be replaced by a streaming kernel).
  std::vector<float> wide = to_f32(weight);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(O), int(I), 1.0f, in, int(I),
              wide.data(), int(I), beta, out, int(O));
}

}  // namespace bd
