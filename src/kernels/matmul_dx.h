// The input gradient of a dense matrix product against stored weights, computed in F32.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace bd {

// dx[T, I] (+)= dy[T, O] · W[O, I], with W in F32, BF16 or F16 (the HF [out, in] layout): the
// backward of bd::matmul with respect to its input. `accumulate`: add to dx instead of
// overwriting it. SGEMM, on BF16/F16 W one block of rows at a time widened to F32, so that
// frozen low-precision weights (e.g. a base model under a trained delta) need no F32 copy.
void matmul_dx(float* dx, const float* dy, const TensorView& weight, int64_t T,
               bool accumulate = false);

}  // namespace bd
