// forward_step: one inference step over many sequences, each with its own adapter (or none), in
// a paged KV cache. Every sequence must get the logits it gets alone through forward() with its
// adapter: prefill and decode mixed in one step, sequences joining late, blocks scattered over
// the pool, adapters interleaved (several segments of one adapter). Also the block pool itself
// and the refusals of forward_step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "delta_test_util.h"
#include "kernels/matmul_panels.h"
#include "model/llama.h"
#include "model/llama_delta.h"
#include "model/llama_params.h"
#include "test_util.h"

namespace bd {
namespace {

LlamaConfig small_config(bool tied) {
  return test::llama_config({.vocab = 37,
                             .hidden = 24,
                             .intermediate = 40,
                             .layers = 2,
                             .heads = 4,
                             .kv_heads = 2,
                             .head_dim = 6,
                             .max_positions = 64,
                             .tied = tied});
}

// One user's request: an adapter (index into the test's deltas, -1 for the base), the tokens
// it feeds (prompt, then one token per decode step), when it joins, and how many tokens its
// prefill takes.
struct Request {
  int adapter;
  int join_step;
  int64_t prompt;
  std::vector<int32_t> tokens;
};

// Logits of each token fed (after the prompt: of each decode step; for the prompt: of its last
// token), running the request alone through forward().
std::vector<std::vector<float>> alone(const LlamaWeights& weights, const LlamaDelta* delta,
                                      const Request& r) {
  const int64_t V = weights.config.vocab_size;
  KVCache cache(weights.config, int64_t(r.tokens.size()));
  std::vector<std::vector<float>> out;
  std::vector<float> logits(static_cast<size_t>(V));
  forward(weights, cache, r.tokens.data(), r.prompt, logits.data(), false, delta);
  out.push_back(logits);
  for (size_t t = size_t(r.prompt); t < r.tokens.size(); ++t) {
    forward(weights, cache, &r.tokens[t], 1, logits.data(), false, delta);
    out.push_back(logits);
  }
  return out;
}

// The linears of `weights` as BF16 copies held in `storage` (norms and embedding stay F32).
void to_bf16_linears(LlamaWeights& weights, std::vector<std::vector<uint16_t>>& storage) {
  std::vector<Linear*> linears = {&weights.lm_head};
  for (LayerWeights& l : weights.layers)
    for (Linear* m : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) linears.push_back(m);
  for (Linear* m : linears) {
    storage.emplace_back(size_t(m->weight.numel()));
    from_f32(DType::BF16, m->weight.as<float>(), storage.back().data(), storage.back().size());
    m->weight = TensorView{DType::BF16, m->weight.shape, storage.back().data()};
  }
}

// Parameters: tied head; BF16 linears copied for decoding (copy_linears_for_decode: panels where
// this CPU prefers them, else W's own layout in huge pages), checked against the same weights
// read in place.
class ForwardStep : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(ForwardStep, EverySequenceGetsItsOwnLogitsInAMixedBatch) {
  const auto [tied, served] = GetParam();
  const bool panels = served && panels_preferred();
  const LlamaConfig config = small_config(tied);
  const int64_t V = config.vocab_size;
  const LlamaParams base = test::random_llama_params(config, 71, 0.3f, 0.1f);
  LlamaWeights weights = base.weights();
  std::vector<std::vector<uint16_t>> bf16;
  if (served) to_bf16_linears(weights, bf16);
  const LlamaWeights plain = weights;  // the reference reads the weights in place
  if (served) {
    ASSERT_GT(copy_linears_for_decode(weights), 0);
    const Linear &copy = weights.layers[1].down, &original = plain.layers[1].down;
    if (panels) {
      ASSERT_NE(copy.panels, nullptr);
    } else {  // the products read the copy, which holds W's bytes
      ASSERT_NE(copy.weight.data, original.weight.data);
      ASSERT_EQ(std::memcmp(copy.weight.data, original.weight.data, original.weight.bytes()), 0);
    }
  }
  // Three users: per-row and per-matrix scales, exact deltas of the embedding, a norm and (untied)
  // the head, stored as BF16 or F32.
  std::vector<test::InMemoryAdapter> adapters;
  for (int u = 0; u < 3; ++u) {
    std::vector<std::string> exact = {"model.embed_tokens.weight",
                                      "model.layers.1.post_attention_layernorm.weight"};
    if (!tied) exact.push_back("lm_head.weight");
    adapters.push_back(test::compress_in_memory(
        base, test::finetune_of(base, 0.05f, uint64_t(72 + u)),
        [u](const std::string&) { return u != 1; }, exact, u == 2 ? DType::BF16 : DType::F32));
  }
  std::vector<LlamaDelta> deltas;
  for (test::InMemoryAdapter& a : adapters)
    deltas.push_back(make_llama_delta(weights, "base", a.matrices, a.exact));
  auto delta_of = [&](int adapter) { return adapter < 0 ? nullptr : &deltas[size_t(adapter)]; };

  std::mt19937 rng(5);
  auto tokens = [&](size_t n) {
    std::vector<int32_t> ids(n);
    for (int32_t& id : ids) id = int32_t(rng() % uint32_t(V));
    return ids;
  };
  // Users 0 and 2 twice, not adjacent; the base; late joiners whose prefill meets decodes.
  const std::vector<Request> requests = {
      {0, 0, 5, tokens(12)}, {-1, 0, 3, tokens(9)},  {2, 0, 1, tokens(10)}, {0, 0, 20, tokens(26)},
      {1, 2, 7, tokens(13)}, {2, 3, 17, tokens(21)}, {-1, 4, 2, tokens(6)},
  };

  // Blocks of 4 positions, handed out as sequences grow, so that every table is scattered.
  KVBlockPool pool(config, 64, 4);
  StepScratch scratch;
  std::vector<KVSequence> kv(requests.size());
  std::vector<size_t> fed(requests.size(), 0);
  std::vector<std::vector<std::vector<float>>> got(requests.size());
  std::vector<std::vector<float>> logits(requests.size());
  for (int step = 0;; ++step) {
    std::vector<StepSequence> batch;
    std::vector<size_t> who;
    for (size_t i = 0; i < requests.size(); ++i) {
      const Request& r = requests[i];
      if (step < r.join_step || fed[i] == r.tokens.size()) continue;
      const int64_t n = fed[i] == 0 ? r.prompt : 1;
      ASSERT_TRUE(pool.reserve(kv[i], kv[i].pos + n));
      logits[i].resize(size_t(V));
      batch.push_back(StepSequence{.tokens = &r.tokens[fed[i]],
                                   .n = n,
                                   .kv = &kv[i],
                                   .delta = delta_of(r.adapter),
                                   .logits = logits[i].data()});
      who.push_back(i);
      fed[i] += size_t(n);
    }
    if (batch.empty()) break;
    forward_step(weights, pool, batch, scratch);
    for (size_t i : who) got[i].push_back(logits[i]);
  }
  for (KVSequence& s : kv) pool.release(s);
  EXPECT_EQ(pool.free_blocks(), pool.blocks());

  double worst = 0, base_distance = 1e9;
  for (size_t i = 0; i < requests.size(); ++i) {
    const std::vector<std::vector<float>> want =
        alone(plain, delta_of(requests[i].adapter), requests[i]);
    ASSERT_EQ(got[i].size(), want.size());
    for (size_t t = 0; t < want.size(); ++t)
      worst = std::max(worst, test::max_relative_error(got[i][t], want[t]));
    if (served) {  // alone on the copy too: one-token steps and merged prompts read it
      const std::vector<std::vector<float>> on_copy =
          alone(weights, delta_of(requests[i].adapter), requests[i]);
      for (size_t t = 0; t < want.size(); ++t)
        worst = std::max(worst, test::max_relative_error(on_copy[t], want[t]));
    }
    if (requests[i].adapter >= 0) {  // the adapter matters: the base alone is far off
      const std::vector<std::vector<float>> base_only = alone(plain, nullptr, requests[i]);
      base_distance =
          std::min(base_distance, test::max_relative_error(base_only.back(), want.back()));
    }
  }
  std::printf("max relative logit error, batched vs alone: %.2e (base vs adapter: %.2e)\n", worst,
              base_distance);
  // The batch runs the base product as one SGEMM over all rows where a sequence alone may take
  // the GEMV: different summation orders, a few F32 ulps through two layers. Panels sum each
  // output in one chain of I multiply-adds where the GEMV and the tiles keep 8 partial sums: up
  // to about I/8 times the rounding error per product, 1.1e-5 (GCC) to 3.7e-5 (clang) here,
  // deterministic for a build; a misplaced weight gives errors of order 1 (checked).
  EXPECT_LT(worst, panels ? 1e-4 : 1e-5);
  EXPECT_GT(base_distance, 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Heads, ForwardStep,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<bool, bool>>& info) {
                           return std::string(std::get<0>(info.param) ? "Tied" : "Untied") +
                                  (std::get<1>(info.param) ? "Bf16DecodeCopy" : "");
                         });

TEST(KVBlockPool, ReservesReleasesAndRefusesWithoutTakingAnything) {
  const LlamaConfig config = small_config(false);
  KVBlockPool pool(config, 5, 4);
  EXPECT_EQ(pool.bytes_per_block(), 2 * 2 * 2 * 4 * 6 * 4);  // k and v, 2 layers, Hkv 2, 4, D 6
  KVSequence a, b;
  EXPECT_TRUE(pool.reserve(a, 9));  // 3 blocks
  EXPECT_EQ(a.blocks.size(), 3u);
  EXPECT_TRUE(pool.reserve(a, 12));  // still 3
  EXPECT_EQ(pool.free_blocks(), 2);
  EXPECT_FALSE(pool.reserve(b, 13));  // needs 4
  EXPECT_TRUE(b.blocks.empty());
  EXPECT_EQ(pool.free_blocks(), 2);
  EXPECT_TRUE(pool.reserve(b, 8));
  EXPECT_EQ(pool.free_blocks(), 0);
  std::vector<int32_t> all = a.blocks;
  all.insert(all.end(), b.blocks.begin(), b.blocks.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  a.pos = 7;
  pool.release(a);
  EXPECT_TRUE(a.blocks.empty());
  EXPECT_EQ(a.pos, 0);
  EXPECT_EQ(pool.free_blocks(), 3);
  test::expect_error([&] { KVBlockPool(config, 0); }, {"blocks must be in [1, 2^31)"});
}

TEST(ForwardStep, RefusesBadStepsBeforeChangingAnything) {
  const LlamaConfig config = small_config(false);
  const LlamaParams base = test::random_llama_params(config, 81, 0.3f, 0.1f);
  const LlamaWeights weights = base.weights();
  KVBlockPool pool(config, 8, 4);
  StepScratch scratch;
  KVSequence kv;
  ASSERT_TRUE(pool.reserve(kv, 4));
  std::vector<int32_t> ids = {1, 2, 3, 4, 5};
  std::vector<float> logits(size_t(config.vocab_size));
  auto step = [&](int64_t n) {
    return [&, n] {
      const StepSequence s{.tokens = ids.data(), .n = n, .kv = &kv, .logits = logits.data()};
      forward_step(weights, pool, {&s, 1}, scratch);
    };
  };
  test::expect_error(step(5), {"need 2 KV blocks", "holds 1"});
  ids[2] = 99;
  test::expect_error(step(4), {"token id 99", "outside the vocabulary"});
  EXPECT_EQ(kv.pos, 0);
  ids[2] = 3;
  step(4)();
  EXPECT_EQ(kv.pos, 4);
  test::expect_error(step(0), {"at least one token"});
  LlamaConfig wider = config;
  wider.num_key_value_heads = 4;
  KVBlockPool wrong(wider, 4, 4);
  KVSequence w;
  ASSERT_TRUE(wrong.reserve(w, 4));
  test::expect_error(
      [&] {
        const StepSequence s{.tokens = ids.data(), .n = 1, .kv = &w, .logits = logits.data()};
        forward_step(weights, wrong, {&s, 1}, scratch);
      },
      {"another model config"});
}

}  // namespace
}  // namespace bd
