// The SIMD kernels behind bd::matmul, compiled for every x86 target Highway knows and chosen at
// run time for the CPU at hand.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/tensor.h"

namespace bd {

// out[T, O] = in[T, I] · W[O, I]^T (or += with `accumulate`), for up to a few hundred tokens:
// W is widened from BF16/F16 to F32 in registers, never in memory. Below 4 tokens each thread
// streams its share of W's rows once (memory-bound); from 4, register tiles of rows × tokens
// (compute-bound: each widened vector of W serves 4 tokens, each vector of x 6 rows). (bd::matmul
// tries AMX first, kernels/matmul_amx.h.)
void gemv(float* out, const float* in, const TensorView& weight, int64_t T, bool accumulate);

// Throws bd::Error unless `weight` is a 2-D F32/BF16/F16 matrix and T ≥ 0 (`caller` names the
// entry point in the message).
void check_matmul_args(const char* caller, const TensorView& weight, int64_t T);

// dst[n] = src[n] as F32 (one thread; src of dtype F32, BF16 or F16).
void widen_to_f32(DType dtype, const void* src, float* dst, size_t n);

// BF16/F16 matrices go through SGEMM in blocks of rows widened to F32 (never the whole matrix):
// rows per block for rows of I elements, about 4 MiB of F32, large enough for SGEMM's full
// rate and small enough to stay in cache between widening and multiplying; at most O.
int64_t widened_block_rows(int64_t O, int64_t I);

// block[rows, I] = weight[row0 : row0 + rows, :] as F32, rows split between the threads.
void widen_rows(const TensorView& weight, int64_t row0, int64_t rows, float* block);

}  // namespace bd
