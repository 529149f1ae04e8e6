// Dense matrix products against stored weights, computed in F32.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace bd {

// out[T, O] = in[T, I] · W[O, I]^T, with W in F32, BF16 or F16 (the HF [out, in] layout).
// `accumulate`: add to out instead of overwriting. Multi-threaded over the current pool.
// 4 or more tokens of BF16 W on CPUs with AMX: its tiles (kernels/matmul_amx.h). Otherwise: up
// to 3 tokens (decode), a streaming GEMV that reads W once at close to memory bandwidth; 4 to
// kGemvMaxTokens (batched decode, prompt chunks), register tiles of 6 rows × 4 tokens with W
// widened in registers; more (training), SGEMM on blocks of W rows widened to F32.
void matmul(float* out, const float* in, const TensorView& weight, int64_t T,
            bool accumulate = false);

// Token counts up to this take bd::gemv (kernels/matmul_gemv.h: streaming, then tiles); larger
// ones take matmul_sgemm. bench/matmul_bench's crossover: tiles ahead of widened SGEMM at every
// count measured up to 256 (BF16 222 against 142 GFLOP/s, F32 143 against 129 at 256 tokens).
inline constexpr int64_t kGemvMaxTokens = 256;

// The many-token path of matmul for any T (benchmarks compare it with the GEMV): SGEMM, on F32 W
// directly, on BF16/F16 W one block of rows at a time widened into a scratch buffer.
void matmul_sgemm(float* out, const float* in, const TensorView& weight, int64_t T,
                  bool accumulate = false);

}  // namespace bd
