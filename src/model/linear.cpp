#include "model/linear.h"

#include <vector>

#include "core/error.h"
#include "kernels/blas.h"
#include "kernels/matmul.h"
#include "kernels/matmul_dx.h"
#include "kernels/sign_matmul.h"

namespace bd {

namespace {

// The delta of `linear` in a segment, or nullptr when it has none.
const LinearDelta* delta_of(const Linear& linear, const RowSegment& segment) {
  if (!segment.delta || segment.rows == 0) return nullptr;
  if (linear.slot < 0 || size_t(linear.slot) >= segment.delta->linears.size())
    fail("linear ", quote_bytes(linear.name), " has no slot in the adapter's delta table");
  const LinearDelta& d = segment.delta->linear(linear.slot);
  return d.empty() ? nullptr : &d;
}

}  // namespace

void linear_forward(float* y, const float* x, const Linear& linear, int64_t rows, Segments segments,
                    bool accumulate) {
  const int64_t O = linear.out_features(), I = linear.in_features();
  // One token of one adapter (decode of a single sequence): base and signs in one pass.
  const LinearDelta* only = rows == 1 && segments.size() == 1 && segments[0].row0 == 0
                                ? delta_of(linear, segments[0])
                                : nullptr;
  if (only && only->sign.bits) {
    matmul_sign_one_token(
        y, x, linear.weight,
        {0, 1, only->sign.bits, only->sign.scale, only->sign.per_row, only->sign.tiles},
        accumulate);
    if (only->exact.data) matmul(y, x, only->exact, 1, /*accumulate=*/true);
    return;
  }
  matmul(y, x, linear.weight, rows, accumulate);
  std::vector<SignSegment> signs;
  for (const RowSegment& segment : segments) {
    const LinearDelta* d = delta_of(linear, segment);
    if (!d) continue;
    if (d->sign.bits)
      signs.push_back({segment.row0, segment.rows, d->sign.bits, d->sign.scale, d->sign.per_row,
                       d->sign.tiles});
    if (d->exact.data)
      matmul(y + segment.row0 * O, x + segment.row0 * I, d->exact, segment.rows,
             /*accumulate=*/true);
  }
  sign_matmul_segments(y, x, signs, O, I);
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const Linear& linear,
                     int64_t rows, Segments segments, bool accumulate_dx) {
  const int64_t O = linear.out_features(), I = linear.in_features();
  if (dx) {  // dx[rows, I] (+)= dy[rows, O] · W[O, I] (+ each segment's delta)
    matmul_dx(dx, dy, linear.weight, rows, accumulate_dx);
    for (const RowSegment& segment : segments) {
      const LinearDelta* d = delta_of(linear, segment);
      if (!d) continue;
      float* dxs = dx + segment.row0 * I;
      const float* dys = dy + segment.row0 * O;
      if (d->sign.bits)
        sign_matmul_backward_x(dxs, dys, d->sign.bits, d->sign.scale, d->sign.per_row, segment.rows,
                               O, I);
      if (d->exact.data) matmul_dx(dxs, dys, d->exact, segment.rows, /*accumulate=*/true);
    }
  }
  if (dW && rows > 0) {  // dW[O, I] += dy[rows, O]ᵀ · x[rows, I]
    sgemm("linear_backward", CblasTrans, CblasNoTrans, O, I, rows, 1.0f, dy, O, x, I, 1.0f, dW, I);
  }
}

}  // namespace bd
