#include "model/linear.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "core/error.h"
#include "kernels/blas.h"
#include "kernels/matmul.h"
#include "kernels/matmul_dx.h"
#include "kernels/matmul_panels.h"
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

// y[T, O] (+)= x[T, I] · Wᵀ: from the panels where the linear has them (bench/matmul_bench's
// `panels`: as fast as the streaming GEMV for one token, ahead of it and of the tiles from 2),
// else bd::matmul.
void base_product(float* y, const float* x, const Linear& linear, int64_t T, bool accumulate) {
  if (linear.panels) {
    matmul_panels(y, x, linear.panels, linear.out_features(), linear.in_features(), T, accumulate);
  } else {
    matmul(y, x, linear.weight, T, accumulate);
  }
}

// y[rows, O] (+)= x[rows, I] · Wᵀ for the rows outside `skip` (segments in row order): one
// product over all of them, gathered into a buffer when they are not one run of rows.
void base_forward(float* y, const float* x, const Linear& linear, int64_t rows,
                  const std::vector<SignSegment>& skip, bool accumulate) {
  const int64_t O = linear.out_features(), I = linear.in_features();
  std::vector<std::pair<int64_t, int64_t>> runs;  // [first, end) of rows to multiply
  int64_t row = 0;
  for (const SignSegment& s : skip) {
    if (s.row0 < row || s.row0 + s.rows > rows) fail("linear_forward: overlapping segments");
    if (s.row0 > row) runs.emplace_back(row, s.row0);
    row = s.row0 + s.rows;
  }
  if (row < rows) runs.emplace_back(row, rows);
  if (runs.size() == 1) {
    const auto [first, end] = runs[0];
    base_product(y + first * O, x + first * I, linear, end - first, accumulate);
    return;
  }
  if (runs.empty()) return;
  int64_t count = 0;
  for (const auto& run : runs) count += run.second - run.first;
  std::vector<float> x_rows(size_t(count * I)), y_rows(size_t(count * O));
  int64_t at = 0;
  for (const auto& run : runs)
    for (int64_t r = run.first; r < run.second; ++r, ++at) {
      std::copy_n(x + r * I, I, x_rows.data() + at * I);
      if (accumulate) std::copy_n(y + r * O, O, y_rows.data() + at * O);
    }
  base_product(y_rows.data(), x_rows.data(), linear, count, accumulate);
  at = 0;
  for (const auto& run : runs)
    for (int64_t r = run.first; r < run.second; ++r, ++at)
      std::copy_n(y_rows.data() + at * O, O, y + r * O);
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
        {0, 1, only->sign.bits, only->sign.scale, only->sign.per_row, only->sign.tiles}, accumulate,
        linear.panels);
    if (only->exact.data) matmul(y, x, only->exact, 1, /*accumulate=*/true);
    return;
  }
  // Segments of many rows (prompts, training batches) take the base and their signs in one
  // product; the few-token ones share the base product of the other rows, then the lookups.
  std::vector<SignSegment> merged, few;
  for (const RowSegment& segment : segments) {
    const LinearDelta* d = delta_of(linear, segment);
    if (!d || !d->sign.bits) continue;
    const SignSegment signs{segment.row0,    segment.rows,  d->sign.bits,           d->sign.scale,
                            d->sign.per_row, d->sign.tiles, segment.lookup_max_rows};
    (segment.rows > segment.lookup_max_rows ? merged : few).push_back(signs);
  }
  base_forward(y, x, linear, rows, merged, accumulate);
  for (const SignSegment& signs : merged)
    matmul_merged_signs(y, x, linear.weight, signs, accumulate, linear.panels);
  sign_matmul_segments(y, x, few, O, I);
  for (const RowSegment& segment : segments) {
    const LinearDelta* d = delta_of(linear, segment);
    if (d && d->exact.data)
      matmul(y + segment.row0 * O, x + segment.row0 * I, d->exact, segment.rows,
             /*accumulate=*/true);
  }
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
