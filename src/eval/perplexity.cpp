#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace bd {

namespace {

constexpr int64_t kChunkTokens = 256;  // bounds the logits buffer to [256, V]

// -log softmax(logits)[target], computed stably in double.
double token_nll(const float* logits, int64_t vocab, int32_t target) {
  float max_logit = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - max_logit);
  return std::log(sum) + max_logit - double(logits[target]);
}

}  // namespace

NllResult evaluate_nll(const LlamaWeights& weights, const LlamaDelta* delta,
                       const std::vector<int32_t>& ids, int64_t context,
                       const std::function<void(int64_t)>& on_progress) {
  if (context < 2) fail("context must be at least 2 tokens, got ", context);
  const int64_t vocab = weights.config.vocab_size;
  KVCache cache(weights.config, context);
  std::vector<float> logits(size_t(std::min(context, kChunkTokens) * vocab));
  NllResult result;
  const int64_t total = int64_t(ids.size());
  for (int64_t start = 0; start < total; start += context) {
    const int64_t length = std::min(context, total - start);
    cache.reset();
    // Position p's logits predict token p + 1 of the window.
    for (int64_t chunk = 0; chunk + 1 < length; chunk += kChunkTokens) {
      const int64_t n = std::min(kChunkTokens, length - 1 - chunk);
      forward(weights, cache, ids.data() + start + chunk, n, logits.data(), true, delta);
      for (int64_t i = 0; i < n; ++i)
        result.nll_sum += token_nll(logits.data() + i * vocab, vocab, ids[start + chunk + i + 1]);
      result.predicted += n;
    }
    if (on_progress) on_progress(start + length);
  }
  return result;
}

}  // namespace bd
