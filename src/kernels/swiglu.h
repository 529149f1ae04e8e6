// The SwiGLU gate of the Llama MLP: act = silu(gate) ⊙ up, silu(g) = g·sigmoid(g).
#pragma once
#include <cstdint>

namespace bd {

// act[N] = silu(gate[N]) · up[N], elementwise (N = rows × intermediate). act may alias gate or up.
void swiglu_forward(float* act, const float* gate, const float* up, int64_t N);

// Overwrites dgate[N] and dup[N] from dact[N] and the forward's gate and up.
void swiglu_backward(float* dgate, float* dup, const float* dact, const float* gate,
                     const float* up, int64_t N);

}  // namespace bd
