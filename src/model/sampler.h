// Picking the next token from logits: greedy, temperature, top-k and top-p (nucleus), seeded.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace bd {

struct SamplerOptions {
  float temperature = 1.0f;  // 0: greedy (argmax)
  int top_k = 0;             // keep the k most likely tokens; 0: all
  float top_p = 1.0f;        // keep the smallest most-likely set with probability >= top_p
  uint64_t seed = 0;
};

// The first index of the largest logit.
int32_t argmax(const float* logits, int64_t vocab);

// Samples from softmax(logits / temperature), restricted by top-k and then top-p and
// renormalised. The stream of draws depends only on the seed: std::mt19937_64 (a fully
// specified engine) and uniforms formed from its top 53 bits, so a seed gives the same tokens
// with every standard library. Allocates nothing after the first call for a vocabulary size.
class Sampler {
 public:
  // Throws bd::Error for a negative or non-finite temperature, top_k < 0 or top_p outside (0, 1].
  explicit Sampler(const SamplerOptions& options);
  int32_t sample(const float* logits, int64_t vocab);
  const SamplerOptions& options() const { return options_; }

 private:
  SamplerOptions options_;
  std::mt19937_64 rng_;
  std::vector<int32_t> candidates_;  // token ids, most likely first once sorted
  std::vector<double> weights_;      // unnormalised probabilities of candidates_
};

}  // namespace bd
