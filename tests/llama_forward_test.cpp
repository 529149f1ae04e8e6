// Inference forward: the KV cache (prefill == chunked prefill == token-by-token decode), the
// inference path == the training path, BF16/F16 weight views == F32 weights of the same rounded
// values, checkpoint round trips of LlamaParams, and bad input.
#include <gtest/gtest.h>
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "io/checkpoint.h"
#include "model/llama.h"
#include "model/llama_params.h"
#include "test_util.h"

namespace bd {
namespace {

// Normwise errors of logits (max error / max |logit|): every logit is a sum over the same hidden
// state, so the rounding of different computation orders is set by the common scale of the
// logits, not by each one's own size.
using test::max_relative_error;

LlamaConfig small_config(RopeScaling::Type scaling = RopeScaling::Type::None) {
  LlamaConfig c = test::llama_config({.vocab = 37,
                                      .hidden = 16,
                                      .intermediate = 24,
                                      .layers = 2,
                                      .heads = 4,
                                      .kv_heads = 2,
                                      .head_dim = 6,
                                      .rms_norm_eps = 1e-5,
                                      .rope_theta = 500.0});
  c.rope_scaling.type = scaling;
  c.rope_scaling.factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 16;  // all llama3 regimes at head_dim 6
  return c;
}

LlamaParams random_params(const LlamaConfig& config, uint64_t seed) {
  return test::random_llama_params(config, seed, 0.25f, 0.1f);
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int32_t& t : tokens) t = int32_t(rng() % uint64_t(vocab));
  return tokens;
}

std::vector<float> prefill_logits(const LlamaWeights& weights, const std::vector<int32_t>& tokens) {
  KVCache cache(weights.config, int64_t(tokens.size()));
  std::vector<float> logits(tokens.size() * size_t(weights.config.vocab_size));
  forward(weights, cache, tokens.data(), int64_t(tokens.size()), logits.data(), true);
  EXPECT_EQ(cache.pos(), int64_t(tokens.size()));
  return logits;
}

struct ScalingCase {
  const char* name;
  RopeScaling::Type type;
};

void PrintTo(const ScalingCase& scaling, std::ostream* out) {
  *out << scaling.name;
}

class KVCacheConsistency : public ::testing::TestWithParam<ScalingCase> {};

TEST_P(KVCacheConsistency, PrefillEqualsChunksEqualsDecode) {
  const LlamaConfig config = small_config(GetParam().type);
  const LlamaParams params = random_params(config, 1);
  const LlamaWeights weights = params.weights();
  const int64_t T = 20, V = config.vocab_size;
  const std::vector<int32_t> tokens = random_tokens(T, V, 2);
  const std::vector<float> full = prefill_logits(weights, tokens);

  KVCache decode_cache(config, 32);
  std::vector<float> logits(static_cast<size_t>(V));
  for (int64_t t = 0; t < T; ++t) {
    forward(weights, decode_cache, &tokens[t], 1, logits.data());
    EXPECT_LT(max_relative_error(logits.data(), &full[t * V], V), 1e-5) << "position " << t;
  }

  KVCache chunk_cache(config, 32);
  int64_t done = 0;
  for (int64_t chunk : {7, 1, 9, 3}) {
    forward(weights, chunk_cache, &tokens[done], chunk, logits.data());  // last token only
    done += chunk;
    EXPECT_LT(max_relative_error(logits.data(), &full[(done - 1) * V], V), 1e-5)
        << "after " << done;
  }
  chunk_cache.reset();
  forward(weights, chunk_cache, tokens.data(), 3, logits.data());
  EXPECT_LT(max_relative_error(logits.data(), &full[2 * V], V), 1e-5) << "after reset";
}

INSTANTIATE_TEST_SUITE_P(RopeScalings, KVCacheConsistency,
                         ::testing::Values(ScalingCase{"none", RopeScaling::Type::None},
                                           ScalingCase{"linear", RopeScaling::Type::Linear},
                                           ScalingCase{"llama3", RopeScaling::Type::Llama3}),
                         [](const ::testing::TestParamInfo<ScalingCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(LlamaForward, InferenceMatchesTrainingForward) {
  const LlamaConfig config = small_config(RopeScaling::Type::Llama3);
  const LlamaParams params = random_params(config, 3);
  const LlamaWeights weights = params.weights();
  const int64_t B = 2, T = 9, V = config.vocab_size;
  const std::vector<int32_t> tokens = random_tokens(B * T, V, 4);
  TrainActivations acts(config, B, T);
  forward_train(weights, tokens.data(), tokens.data(), B, T, acts);
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int32_t> sequence(tokens.begin() + b * T, tokens.begin() + (b + 1) * T);
    const std::vector<float> logits = prefill_logits(weights, sequence);
    EXPECT_LT(max_relative_error(logits.data(), acts.logits + b * T * V, T * V), 1e-5);
  }
}

// Every tensor stored as `dtype`, and the same values widened back to F32.
struct RoundedWeights {
  std::vector<std::vector<uint16_t>> stored;
  std::vector<std::vector<float>> widened;
  std::map<std::string, TensorView> stored_views, widened_views;
};

RoundedWeights round_weights(const LlamaParams& params, DType dtype) {
  RoundedWeights r;
  for (const NamedTensor& t : params.named_tensors()) {
    std::vector<uint16_t>& bits = r.stored.emplace_back(size_t(t.view.numel()));
    std::vector<float>& wide = r.widened.emplace_back(bits.size());
    from_f32(dtype, t.view.as<float>(), bits.data(), bits.size());
    to_f32(dtype, bits.data(), wide.data(), wide.size());
    r.stored_views[t.name] = TensorView{dtype, t.view.shape, bits.data()};
    r.widened_views[t.name] = TensorView{DType::F32, t.view.shape, wide.data()};
  }
  return r;
}

LlamaWeights weights_of(const LlamaConfig& config, const std::map<std::string, TensorView>& views) {
  return make_llama_weights(config, "test", [&](const std::string& name) -> const TensorView* {
    auto it = views.find(name);
    return it == views.end() ? nullptr : &it->second;
  });
}

TEST(LlamaForward, HalfPrecisionWeightsEqualTheirF32Values) {
  for (bool tied : {false, true}) {
    LlamaConfig config = small_config();
    config.tie_word_embeddings = tied;
    const LlamaParams params = random_params(config, 5);
    const std::vector<int32_t> tokens = random_tokens(12, config.vocab_size, 6);
    for (DType dtype : {DType::BF16, DType::F16}) {
      const RoundedWeights r = round_weights(params, dtype);
      const LlamaWeights half = weights_of(config, r.stored_views);
      const LlamaWeights wide = weights_of(config, r.widened_views);
      EXPECT_EQ(half.layers[0].q.weight.dtype, dtype);
      EXPECT_EQ(half.final_norm.dtype, DType::F32);  // norms are widened once
      // Prefill (12 rows: the SGEMM path) and decode (1 row: the GEMV path).
      const std::vector<float> a = prefill_logits(half, tokens), b = prefill_logits(wide, tokens);
      EXPECT_LT(max_relative_error(a.data(), b.data(), int64_t(a.size())), 1e-5)
          << dtype_name(dtype);
      KVCache cache_a(config, 12), cache_b(config, 12);
      std::vector<float> step_a(static_cast<size_t>(config.vocab_size)), step_b(step_a.size());
      for (int32_t token : tokens) {
        forward(half, cache_a, &token, 1, step_a.data());
        forward(wide, cache_b, &token, 1, step_b.data());
      }
      EXPECT_LT(max_relative_error(step_a.data(), step_b.data(), config.vocab_size), 1e-5);
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
// forward() turns on flush-to-zero and denormals-are-zero on every thread of the OpenMP pool (its
// one parallel region without a size threshold), so that subnormal activations cannot slow the
// kernels: after clearing both bits on every thread, one forward sets them again on all.
TEST(LlamaForward, SetsFlushToZeroOnEveryPoolThread) {
  constexpr unsigned kFtzDaz = 0x8040;  // MXCSR bits 15 and 6
#pragma omp parallel
  _mm_setcsr(_mm_getcsr() & ~kFtzDaz);
  const LlamaConfig config = small_config();
  const LlamaParams params = random_params(config, 12);
  prefill_logits(params.weights(), random_tokens(3, config.vocab_size, 13));
  int threads = 0, flushing = 0;
#pragma omp parallel reduction(+ : threads, flushing)
  {
    ++threads;
    flushing += (_mm_getcsr() & kFtzDaz) == kFtzDaz;
  }
  EXPECT_EQ(flushing, threads);
  EXPECT_EQ(threads, omp_get_max_threads());
}
#endif

TEST(LlamaForward, RejectsBadTokensAndFullCaches) {
  const LlamaConfig config = small_config();
  const LlamaParams params = random_params(config, 7);
  const LlamaWeights weights = params.weights();
  KVCache cache(config, 4);
  std::vector<float> logits(static_cast<size_t>(config.vocab_size));
  const std::vector<int32_t> bad = {1, int32_t(config.vocab_size)};
  EXPECT_THROW(forward(weights, cache, bad.data(), 2, logits.data()), Error);
  EXPECT_EQ(cache.pos(), 0);
  const std::vector<int32_t> five = {1, 2, 3, 4, 5};
  EXPECT_THROW(forward(weights, cache, five.data(), 5, logits.data()), Error);
  forward(weights, cache, five.data(), 4, logits.data());
  EXPECT_THROW(forward(weights, cache, five.data(), 1, logits.data()), Error);
  LlamaConfig other = config;
  other.num_key_value_heads = 4;
  KVCache other_cache(other, 4);
  EXPECT_THROW(forward(weights, other_cache, five.data(), 1, logits.data()), Error);
}

TEST(LlamaWeights, RejectsTensorsThatContradictTheConfig) {
  const LlamaConfig config = small_config();
  const LlamaParams params = random_params(config, 8);
  std::map<std::string, TensorView> views;
  for (const NamedTensor& t : params.named_tensors()) views[t.name] = t.view;
  views.erase("model.layers.1.mlp.up_proj.weight");
  try {
    weights_of(config, views);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.mlp.up_proj.weight"), std::string::npos);
  }
  for (const NamedTensor& t : params.named_tensors()) views[t.name] = t.view;
  views["model.norm.weight"].shape = {15};
  EXPECT_THROW(weights_of(config, views), Error);
}

TEST(LlamaParams, InitRandomIsSeededAndScaled) {
  LlamaConfig config = small_config();
  config.hidden_size = 64;
  config.intermediate_size = 128;
  LlamaParams a(config), b(config), c(config);
  a.init_random(11);
  b.init_random(11);
  c.init_random(12);
  EXPECT_EQ(std::vector<float>(a.data(), a.data() + a.size()),
            std::vector<float>(b.data(), b.data() + b.size()));
  EXPECT_NE(a.data()[0], c.data()[0]);
  auto std_dev = [&](const std::string& name) {
    const float* values = a.find(name);
    const ParamSlice* slice = nullptr;
    for (const ParamSlice& s : a.slices())
      if (s.name == name) slice = &s;
    double sum_sq = 0;
    for (size_t i = 0; i < slice->numel; ++i) sum_sq += double(values[i]) * values[i];
    return std::sqrt(sum_sq / double(slice->numel));
  };
  EXPECT_NEAR(std_dev("model.embed_tokens.weight"), 0.02, 0.002);
  EXPECT_NEAR(std_dev("model.layers.0.mlp.up_proj.weight"), 0.02, 0.001);
  EXPECT_NEAR(std_dev("model.layers.1.mlp.down_proj.weight"), 0.01, 0.0005);  // 0.02/sqrt(2·2)
  EXPECT_NEAR(std_dev("model.layers.0.self_attn.o_proj.weight"), 0.01, 0.001);
  EXPECT_EQ(a.find("model.norm.weight")[5], 1.0f);
  EXPECT_EQ(a.find("no.such.weight"), nullptr);
}

TEST(LlamaParams, CheckpointRoundTripGivesTheSameModel) {
  const test::ScratchDir scratch;
  const std::string dir = scratch / "model";
  const LlamaConfig config = small_config(RopeScaling::Type::Linear);
  const LlamaParams params = random_params(config, 9);
  save_checkpoint(dir, config, params.named_tensors(), "", {}, true);
  const Checkpoint checkpoint(dir);
  const LlamaParams loaded = LlamaParams::from_checkpoint(checkpoint);
  EXPECT_EQ(std::vector<float>(loaded.data(), loaded.data() + loaded.size()),
            std::vector<float>(params.data(), params.data() + params.size()));
  const std::vector<int32_t> tokens = random_tokens(6, config.vocab_size, 10);
  const std::vector<float> mapped = prefill_logits(weights_from_checkpoint(checkpoint), tokens);
  const std::vector<float> owned = prefill_logits(params.weights(), tokens);
  EXPECT_EQ(mapped, owned);
}

}  // namespace
}  // namespace bd
