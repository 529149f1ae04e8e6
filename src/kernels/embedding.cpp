#include "kernels/embedding.h"

#include "core/error.h"

namespace bd {

void embedding_forward(float* out, const int32_t* tokens, const TensorView& table, int64_t N) {
  const int64_t V = table.dim(0), C = table.dim(1);
  const size_t row_bytes = size_t(C) * dtype_size(table.dtype);
  for (int64_t n = 0; n < N; ++n) {
    if (tokens[n] < 0 || tokens[n] >= V)
      fail("token id ", tokens[n], " at position ", n, " is outside the vocabulary [0, ", V, ")");
    const char* row = static_cast<const char*>(table.data) + size_t(tokens[n]) * row_bytes;
    to_f32(table.dtype, row, out + n * C, size_t(C));
  }
}

// Serial: repeated tokens add into the same row.
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    float* row = dtable + int64_t(tokens[n]) * C;
    const float* g = dout + n * C;
    for (int64_t c = 0; c < C; ++c) row[c] += g[c];
  }
}

}  // namespace bd
