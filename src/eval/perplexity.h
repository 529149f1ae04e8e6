// Held-out negative log-likelihood of a token sequence under a model.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/llama.h"

namespace bd {

struct NllResult {
  int64_t predicted = 0;  // tokens that were predicted (every token of a window but its first)
  double nll_sum = 0;     // Σ -log p(token | tokens before it in its window), nats
  double mean_nll() const { return predicted ? nll_sum / double(predicted) : 0.0; }
};

// Cuts `ids` into consecutive non-overlapping windows of `context` tokens (the last may be
// shorter) and, inside each window, predicts every token after the first from the ones before
// it, with the adapter `delta` (nullptr: the base). `on_progress(done_tokens)` is called as
// windows advance. Memory stays bounded for long windows and large vocabularies: a window is fed
// through the KV cache in chunks.
NllResult evaluate_nll(const LlamaWeights& weights, const LlamaDelta* delta,
                       const std::vector<int32_t>& ids, int64_t context,
                       const std::function<void(int64_t)>& on_progress = {});

}  // namespace bd
