// Dense matrix products against stored weights, computed in F32.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace bd {

// out[T, O] = in[T, I] · W[O, I]^T, with W in F32, BF16 or F16 (the HF [out, in] layout).
// `accumulate`: add to out instead of overwriting. Multi-threaded over the current pool.
// T = 1 (decode) is memory-bound: it streams W once at close to memory bandwidth.
void matmul(float* out, const float* in, const TensorView& weight, int64_t T, bool accumulate = false);

}  // namespace bd
