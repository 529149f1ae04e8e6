// Cross-entropy of next-token targets under softmax(logits), averaged over the counted rows.
#pragma once
#include <cstdint>

namespace bd {

// Returns the mean over rows with targets[n] >= 0 of -log softmax(logits[n])[targets[n]]
// (0 when no row counts), with logits[N, V]. Writes lse[N] (log-sum-exp of each row) for the
// backward pass and the number of counted rows to *count. Throws bd::Error for a target >= V.
float cross_entropy_forward(float* lse, int64_t* count, const float* logits, const int32_t* targets,
                            int64_t N, int64_t V);

// dlogits[N, V] = scale · (softmax(logits) - onehot(target)) on counted rows, 0 on ignored rows.
// For the mean loss, scale = 1 / count. dlogits may alias logits.
void cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V, float scale);

}  // namespace bd
