#include "kernels/embedding.h"

#include <vector>

#include "core/error.h"

namespace bd {

namespace {

const char* table_row(const TensorView& table, const int32_t* tokens, int64_t n) {
  const int64_t V = table.dim(0), C = table.dim(1);
  if (tokens[n] < 0 || tokens[n] >= V)
    fail("token id ", tokens[n], " at position ", n, " is outside the vocabulary [0, ", V, ")");
  return static_cast<const char*>(table.data) +
         size_t(tokens[n]) * size_t(C) * dtype_size(table.dtype);
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const TensorView& table, int64_t N) {
  const int64_t C = table.dim(1);
  for (int64_t n = 0; n < N; ++n)
    to_f32(table.dtype, table_row(table, tokens, n), out + n * C, size_t(C));
}

void embedding_accumulate(float* out, const int32_t* tokens, const TensorView& table, int64_t N) {
  const int64_t C = table.dim(1);
  std::vector<float> row(static_cast<size_t>(C));
  for (int64_t n = 0; n < N; ++n) {
    to_f32(table.dtype, table_row(table, tokens, n), row.data(), size_t(C));
    float* dst = out + n * C;
    for (int64_t c = 0; c < C; ++c) dst[c] += row[size_t(c)];
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
