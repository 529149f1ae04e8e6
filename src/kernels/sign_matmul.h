// Products with packed 1-bit sign matrices, the BitDelta overlay: y += γ ⊙ (S·x).
//
// S[O, I] ∈ {−1, +1} is stored row-major as bits[O, sign_row_bytes(I)]: bit j (LSB first) of
// byte b of row o is S[o, 8b + j], and a set bit means +1 (δ ≥ 0). Padding bits of the last byte
// of a row are 0 and never read as weights.
#pragma once
#include <cstdint>

namespace bd {

inline int64_t sign_row_bytes(int64_t in) { return (in + 7) / 8; }

// y[T, O] += scale ⊙ (x[T, I] · Sᵀ); scale is [O] when per_row, else [1].
void sign_matmul(float* y, const float* x, const uint8_t* bits, const float* scale, bool per_row,
                 int64_t T, int64_t O, int64_t I);

// sx[T, O] = x[T, I] · Sᵀ, unscaled (for the scale gradient dL/dγ = Σ_t dY ⊙ (S·x)).
void sign_project(float* sx, const float* x, const uint8_t* bits, int64_t T, int64_t O, int64_t I);

// dx[T, I] += (dy[T, O] ⊙ scale) · S: the backward of sign_matmul with respect to x.
void sign_matmul_backward_x(float* dx, const float* dy, const uint8_t* bits, const float* scale,
                            bool per_row, int64_t T, int64_t O, int64_t I);

}  // namespace bd
