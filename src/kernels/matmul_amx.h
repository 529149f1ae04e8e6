// BF16 matrix products on AMX, the tile unit of Intel Xeons from Sapphire Rapids on: the
// batched-decode path of bd::gemv on machines that have it.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace bd {

// Token counts from kAmxMinTokens on go to AMX. Fewer: the streaming GEMV reads W faster (AMX
// reads 32 rows side by side, and packing x costs the same for 1 token as for 16); at 4 both
// run at the same speed, at 16 AMX is 1.1× (256 × 2048) to 2.1× faster (bench/matmul_bench `amx`).
inline constexpr int64_t kAmxMinTokens = 4;
// Most tokens per pass over W: more tokens take several passes, each reading W once. Passes are
// shorter where x is wide (32 tokens for rows of 5632), so that a pass's packed x (6 bytes per
// token and column) stays in L2.
inline constexpr int64_t kAmxPassTokens = 64;

// True when the CPU has AMX-BF16 (and AVX-512 BF16 for packing x) and Linux granted this
// process the tile registers; false elsewhere (other CPUs, other systems). Asked once.
bool amx_available();

// Turns the AMX path off (or back on) for the whole process: benchmarks and tests compare it
// with the AVX kernels on the same machine. On by default.
void set_amx_enabled(bool enabled);
bool amx_enabled();

// out[T, O] (+)= in[T, I] · W[O, I]^T on AMX when it applies: BF16 W, I a multiple of 32,
// T ≥ kAmxMinTokens, AMX available and enabled; returns false (and does nothing) otherwise.
// x is split into three BF16 terms (hi + mid + lo carry its 24-bit significand), each multiplied
// exactly by W and summed in F32, so the result is as accurate as an F32 product, and a token's
// row of `out` does not depend on the other tokens in the batch (same operations in the same
// order for every T).
bool matmul_amx(float* out, const float* in, const TensorView& weight, int64_t T, bool accumulate);

}  // namespace bd
