// BitDelta's 1-bit packing: the sign of δ = W_finetune − W_base, one bit per weight, with the
// magnitudes that give the L2-optimal scale, and the inverse W_base + γ ⊙ S for reconstruction.
// The bit layout is sign_matmul.h's: bits[O, sign_row_bytes(I)], bit j (LSB first) of byte b of
// row o is S[o, 8b + j], a set bit means +1 (δ ≥ 0, so an exact zero is +1), padding bits are 0.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace bd {

// For rows [0, rows) of δ[rows, in] = finetune − base (both `dtype`: F32, BF16 or F16, row-major,
// widened to F32 exactly, subtracted in F32): packs sign(δ) into bits[rows, sign_row_bytes(in)]
// and sets abs_sums[r] = Σ_j |δ[r, j]|, which is NaN or inf when row r's δ holds NaN or ±inf.
// One thread; callers split a matrix into row blocks across threads.
void pack_delta_signs(DType dtype, const void* base, const void* finetune, int64_t rows, int64_t in,
                      uint8_t* bits, double* abs_sums);

// γ = mean |δ| per row (scale[rows]) or over the matrix (scale[1]), from pack_delta_signs' sums:
// the γ that minimises ‖δ − γ·S‖² for S = sign(δ), since d/dγ Σ (δ − γ·s)² = −2 Σ |δ| + 2 n γ.
void mean_abs_scales(const double* abs_sums, int64_t rows, int64_t in, bool per_row, float* scale);

// out[rows, in] = round_to_out_dtype(widen(base) + scale ⊙ S): γ·s is ±γ exactly, the sum is one
// F32 addition, then one rounding (nearest even) to out_dtype; scale is [rows] when per_row,
// else [1]. The reconstruction `bitdelta apply` writes. Multi-threaded over rows.
void add_scaled_signs(DType base_dtype, const void* base, const uint8_t* bits, const float* scale,
                      bool per_row, int64_t rows, int64_t in, DType out_dtype, void* out);

}  // namespace bd
