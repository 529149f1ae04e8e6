// Token embedding lookup: rows of a [V, C] table (F32, BF16 or F16), widened to F32.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace bd {

// out[N, C] = table[tokens[n], :]. Throws bd::Error for a token id outside [0, V).
void embedding_forward(float* out, const int32_t* tokens, const TensorView& table, int64_t N);

// out[N, C] += table[tokens[n], :] widened to F32 (an adapter's embedding delta on its rows).
// Throws bd::Error for a token id outside [0, V).
void embedding_accumulate(float* out, const int32_t* tokens, const TensorView& table, int64_t N);

// dtable[V, C] += dout[N, C] scattered to the rows of tokens[N].
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C);

}  // namespace bd
