// Products with packed 1-bit sign matrices, the BitDelta overlay: y += γ ⊙ (S·x).
//
// S[O, I] ∈ {−1, +1} is stored row-major as bits[O, sign_row_bytes(I)]: bit j (LSB first) of
// byte b of row o is S[o, 8b + j], and a set bit means +1 (δ ≥ 0). Padding bits of the last byte
// of a row are 0 and never read as weights.
#pragma once
#include <cstdint>
#include <span>

#include "core/tensor.h"

namespace bd {

inline int64_t sign_row_bytes(int64_t in) {
  return (in + 7) / 8;
}

// Token counts up to this take the few-token path: x quantized per token to integers q with
// |q| ≤ kSignQuantMax (step = max|x| / kSignQuantMax) and S·q summed exactly, so each output is
// within about I·step / 2 of S·x (a relative 4e-5 of the delta term on the 1.1B shapes, far
// below what rounding the merged weights to BF16 moves). 14 bits, so that sums of 4 of them fit
// the 16-bit table entries of the lookup kernels. Larger counts (training and evaluation batches,
// which finite-difference and dense-model tests hold to F32 rounding) widen S to ±scale floats
// for SGEMM, exact products; linear_forward merges W + γ·S for them instead. On AVX2 the lookups
// would stay faster far beyond 8 tokens, but they quantize x (docs/benchmarks.md, session 10).
// That is the default bound of a segment (SignSegment::lookup_max_rows); generation raises it.
inline constexpr int64_t kSignGemvMaxTokens = 8;
// The bound for generation (the server's steps, bitdelta generate): prompt chunks up to this
// many rows per adapter take the lookups as decode tokens do. Per row they cost a fraction of
// widening W + γ·S once more for the segment (docs/benchmarks.md, session 11), and generation
// already runs every decode token through them, so nothing it answers rests on exact sums.
inline constexpr int64_t kGenerateLookupMaxTokens = 24;
// The same bound where AMX runs the base product (kernels/matmul_amx.h): the base product then
// costs so little per row that the lookups stay ahead of the merged product at every chunk a
// server step holds (EngineOptions::max_step_tokens: 512): 5632 × 2048, 512 rows by lookups
// 18.6–19.9 ms plus 14.6–15.2 for the AMX product, against 44–51 merged; 2048 × 5632 20–22 plus
// 16–17, against 57–62 (docs/benchmarks.md, session 18). The bound keeps the tables of a
// longer prompt (16–44 KiB per row) from growing with it.
inline constexpr int64_t kGenerateLookupMaxTokensAmx = 512;
// kGenerateLookupMaxTokensAmx where the AMX path is available and on, else
// kGenerateLookupMaxTokens: what generation passes as its segments' lookup_max_rows.
int64_t generate_lookup_max_tokens();
inline constexpr int kSignQuantMax = 8191;
// Columns of S at most (2^21: far beyond any model's width), so that the few-token kernels' 32-bit
// row sums cannot overflow.
inline constexpr int64_t kMaxSignColumns = int64_t(1) << 21;

// y[T, O] += scale ⊙ (x[T, I] · Sᵀ); scale is [O] when per_row, else [1].
void sign_matmul(float* y, const float* x, const uint8_t* bits, const float* scale, bool per_row,
                 int64_t T, int64_t O, int64_t I);

// A run of rows of x and y that share one adapter's signs (one user's rows in a served batch).
struct SignSegment {
  int64_t row0 = 0, rows = 0;
  const uint8_t* bits = nullptr;  // [O, sign_row_bytes(I)]
  const float* scale = nullptr;   // [O] when per_row, else [1]
  bool per_row = false;
  const uint8_t* tiles = nullptr;                // optional: the same bits from pack_sign_tiles
  int64_t lookup_max_rows = kSignGemvMaxTokens;  // up to this many rows: the quantized lookups
};

// The table-lookup kernels read sign rows transposed, so that one register holds many rows' bits
// of the same columns (AVX2, and AVX-512 without VBMI and VNNI: 16 rows × 8 columns per 16-byte
// lane; AVX-512 with VBMI and VNNI: 16 rows × 32 columns per register, in tiles of 32 rows); they
// transpose them on every call unless a segment brings them so (`tiles`), e.g. an adapter kept
// resident by a server. Bytes of that layout for S[O, I] (the size of the bits, rounded up to 16
// rows and 256 columns, or 32 rows and 32 columns), or 0 where this CPU's kernel does not use it.
int64_t sign_tiles_bytes(int64_t O, int64_t I);

// tiles[sign_tiles_bytes(O, I)] (64-byte aligned) = bits[O, sign_row_bytes(I)] in that layout;
// nothing where sign_tiles_bytes is 0. The layout depends on the CPU: pack on the machine that
// multiplies. One thread.
void pack_sign_tiles(const uint8_t* bits, int64_t O, int64_t I, uint8_t* tiles);

// sign_matmul for each segment: y[row0 : row0 + rows] += scale ⊙ (x[row0 : row0 + rows] · Sᵀ).
// The segments of at most lookup_max_rows rows share one parallel pass of lookups (each thread
// streams a contiguous run of all of their sign rows); longer ones go through SGEMM one after
// another.
void sign_matmul_segments(float* y, const float* x, std::span<const SignSegment> segments,
                          int64_t O, int64_t I);

// y[1, O] (+)= x[1, I] · Wᵀ + scale ⊙ (x · Sᵀ): one token's base product and one adapter's sign
// product (signs.row0 = 0, rows = 1), the result of matmul then sign_matmul_segments. On the
// targets with a table-lookup kernel (AVX2 and later) in one pass over blocks of rows, so that the
// lookups of a block run while its rows of W stream in from DRAM: decode of a single sequence.
// `panels` (optional): W's panels (kernels/matmul_panels.h), read instead of `weight`.
void matmul_sign_one_token(float* y, const float* x, const TensorView& weight,
                           const SignSegment& signs, bool accumulate,
                           const uint32_t* panels = nullptr);

// y[row0 : row0 + rows, O] (+)= x[row0 : row0 + rows, I] · (W + scale ⊙ S)ᵀ: a segment of many
// rows (a prompt, a training batch) with the base and its signs in one product, through SGEMM on
// blocks of W's rows widened to F32 with ±scale added (about the cost of the base product alone,
// where base then signs would widen and multiply twice).
// `panels` (optional): W's panels, widened instead of `weight`.
void matmul_merged_signs(float* y, const float* x, const TensorView& weight,
                         const SignSegment& signs, bool accumulate,
                         const uint32_t* panels = nullptr);

// sx[T, O] = x[T, I] · Sᵀ, unscaled (for the scale gradient dL/dγ = Σ_t dY ⊙ (S·x)).
void sign_project(float* sx, const float* x, const uint8_t* bits, int64_t T, int64_t O, int64_t I);

// dx[T, I] += (dy[T, O] ⊙ scale) · S: the backward of sign_matmul with respect to x.
void sign_matmul_backward_x(float* dx, const float* dy, const uint8_t* bits, const float* scale,
                            bool per_row, int64_t T, int64_t O, int64_t I);

}  // namespace bd
