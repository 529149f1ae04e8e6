// BF16 weights re-laid into panels for the batched products of a serving process (AVX2).
//
// Dot tiles over row-major W (kernels/matmul_gemv.h) widen each vector of W with two instructions
// for only 3 rows × 4 tokens of multiply-adds on AVX2 (16 registers) and load each vector of x
// once per 3 rows; on this project's Zen 3 machine they run at 44–60 GFLOP/s per core. An outer
// product ran at 77–92 (16–64 tokens, docs/benchmarks.md): per column of a strip of 16 rows, one
// 32-byte load holds the 16 rows' BF16 values (row j in the low half of 32-bit lane j, row 8 + j in
// the high half), a shift and an AND widen them to two vectors of F32, and each of up to 6 tokens'
// x is broadcast once for 16 outputs: 2 widening instructions per 12 multiply-adds. The layout must
// be built once (packing a strip per call costs as much as it saves at 16 tokens), so a server
// re-lays its BF16 linears once (copy_linears_for_decode in model/llama.h) and every forward
// product reads the panels instead.
//
// Layout of a matrix W[O, I]: strips s = 0 .. ⌈O/16⌉ − 1, each I columns of 8 uint32:
// panels[(s·I + i)·8 + j] = bf16(W[16s + j, i]) | bf16(W[16s + 8 + j, i]) << 16 (rows past O: 0).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace bd {

inline constexpr int64_t kPanelRows = 16;

// Bytes of the panels of an [O, I] matrix.
int64_t panel_bytes(int64_t O, int64_t I);

// True where panels beat the dot tiles: the AVX2 kernels (AVX-512's 32 registers hold 6 × 4
// tiles, which ran at 222 GFLOP/s at 16 tokens on Zen 5; not measured with panels there).
bool panels_preferred();

// panels (panel_bytes(O, I) bytes, 32-byte aligned) = W, a BF16 [O, I] matrix; threads over strips.
void pack_panels(const TensorView& weight, uint32_t* panels);

// out[T, O] (+)= in[T, I] · W[O, I]ᵀ from W's panels; threads over strips. Every target computes
// it (the non-AVX2 ones plainly, for tests); serving uses it where panels_preferred().
void matmul_panels(float* out, const float* in, const uint32_t* panels, int64_t O, int64_t I,
                   int64_t T, bool accumulate);

}  // namespace bd
