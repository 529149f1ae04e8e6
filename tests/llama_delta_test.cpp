// LlamaDelta: a BitDelta adapter applied inside the forward, kept apart from the base weights.
// The fused model (y = W·x + γ ⊙ (S·x), S from packed bits) must give the logits of the densely
// applied model W + γ·S (built here in F32 from the unpacked bits) within F32 rounding, on every
// path: prefill, one-token decode (sign GEMV) and the training forward (widened SGEMM); and a
// linear with a delta must back-propagate through W + γ·S. `bitdelta eval/generate --delta` run
// it end to end.
#include "model/llama_delta.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "delta_test_util.h"
#include "io/adapter.h"
#include "kernels/sign_matmul.h"
#include "model/byte_tokenizer.h"
#include "model/linear.h"
#include "test_util.h"

namespace bd {
namespace {

using test::InMemoryAdapter;
using test::ScratchDir;

struct Setup {
  DType dtype;
  bool tied;
};

LlamaConfig small_config(bool tied) {
  return test::llama_config({.vocab = 37,
                             .hidden = 24,
                             .intermediate = 40,
                             .layers = 2,
                             .heads = 4,
                             .kv_heads = 2,
                             .head_dim = 6,
                             .max_positions = 32,
                             .tied = tied});
}

// `params` stored in `dtype` (their values must be representable: round them first).
void save_params(const std::string& dir, const LlamaParams& params, DType dtype) {
  std::vector<NamedTensor> tensors = params.named_tensors();
  std::vector<std::vector<uint8_t>> bytes;
  bytes.reserve(tensors.size());
  for (NamedTensor& t : tensors) {
    bytes.emplace_back(t.view.bytes() / 4 * dtype_size(dtype));
    from_f32(dtype, t.view.as<float>(), bytes.back().data(), size_t(t.view.numel()));
    t.view = TensorView{dtype, t.view.shape, bytes.back().data()};
  }
  save_checkpoint(dir, params.config(), tensors, "", {}, false);
}

// Every value rounded to `dtype` and back.
void round_to(LlamaParams& params, DType dtype) {
  std::vector<uint8_t> bytes(params.size() * dtype_size(dtype));
  from_f32(dtype, params.data(), bytes.data(), params.size());
  to_f32(dtype, bytes.data(), params.data(), params.size());
}

bool mlp(const std::string& name) {
  return name.find(".mlp.") != std::string::npos;
}

// Logits of prefill (5 tokens, all logits) then 3 one-token decode steps: [8, V].
std::vector<float> inference_logits(const LlamaWeights& weights, const std::vector<int32_t>& ids,
                                    const LlamaDelta* delta = nullptr) {
  const int64_t V = weights.config.vocab_size;
  KVCache cache(weights.config, 8);
  std::vector<float> logits(size_t(8 * V));
  forward(weights, cache, ids.data(), 5, logits.data(), /*all_logits=*/true, delta);
  for (int64_t t = 5; t < 8; ++t)
    forward(weights, cache, &ids[size_t(t)], 1, &logits[size_t(t * V)], false, delta);
  return logits;
}

std::vector<float> training_logits(const LlamaWeights& weights, const std::vector<int32_t>& ids,
                                   const LlamaDelta* delta = nullptr) {
  const int64_t B = 2, T = 12, V = weights.config.vocab_size;
  TrainActivations acts(weights.config, B, T);
  std::vector<int32_t> targets(ids.begin() + 1, ids.begin() + 1 + B * T);
  forward_train(weights, ids.data(), targets.data(), B, T, acts, delta);
  return std::vector<float>(acts.logits, acts.logits + B * T * V);
}

class FusedForward : public ::testing::TestWithParam<Setup> {};

TEST_P(FusedForward, MatchesTheDenselyAppliedModel) {
  const auto [dtype, tied] = GetParam();
  const LlamaConfig config = small_config(tied);
  LlamaParams base = test::random_llama_params(config, 11, 0.3f, 0.1f);
  round_to(base, dtype);
  const LlamaParams finetune = test::finetune_of(base, 0.05f, 12);
  const InMemoryAdapter adapter = test::compress_in_memory(
      base, finetune, mlp,
      {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.input_layernorm.weight"},
      dtype);
  ScratchDir scratch;
  save_params(scratch / "base", base, dtype);
  const Checkpoint checkpoint(scratch / "base");
  const LlamaWeights weights = weights_from_checkpoint(checkpoint);
  const LlamaDelta fused =
      make_llama_delta(weights, checkpoint.dir(), adapter.matrices, adapter.exact);
  const LlamaParams dense = test::apply_in_memory(base, adapter);

  std::mt19937 rng(3);
  std::vector<int32_t> ids(25);
  for (int32_t& id : ids) id = int32_t(rng() % config.vocab_size);

  const std::vector<float> want_inference = inference_logits(dense.weights(), ids);
  const double inference_error =
      test::max_relative_error(inference_logits(weights, ids, &fused), want_inference);
  const double training_error = test::max_relative_error(training_logits(weights, ids, &fused),
                                                         training_logits(dense.weights(), ids));
  // The delta is not a no-op: the base alone is far from the applied model.
  const double base_distance =
      test::max_relative_error(inference_logits(weights, ids), want_inference);
  std::printf("max relative logit error: inference %.2e, training %.2e (base alone: %.2e)\n",
              inference_error, training_error, base_distance);
  // Training (24 rows: the sign products run on SGEMM, exact products): F32 rounding only,
  // W·x + γ(S·x) and (W + γS)·x differ by a few ulps per product, carried through two layers
  // (measured up to 1.8e-6). Inference decodes one token at a time, where S·x is summed on x
  // quantized to 14 bits per token (kernels/sign_matmul.h; measured up to 7.5e-5 on these
  // narrow layers, where a step of max|x| / 8191 is largest against |S·x|). Normwise (max
  // error / max |logit|): every logit is a sum over the same hidden state, so its rounding error
  // is set by the common scale of the logits, not by its own size.
  constexpr double kTolerance = 1e-5, kInferenceTolerance = 1.2e-4;
  EXPECT_LT(inference_error, kInferenceTolerance);
  EXPECT_LT(training_error, kTolerance);
  EXPECT_GT(base_distance, 1e-2);

  // Every sign is read: flipping each of the 9216 signs of these adapters once (too slow to
  // repeat here; exact sums) moved the inference logits by at least 2.8e-5 of their scale, the
  // training ones by 3e-4; the least visible sign is S[9, 2] of layer 1's gate_proj. That is
  // below the quantization's error against the dense model, but both runs below quantize the
  // same way (x moves only by the flip's own effect), so the flip shows against the fused run.
  std::vector<AdapterMatrix> matrices = adapter.matrices;
  std::vector<uint8_t> flipped_bits;
  for (size_t m = 0; m < matrices.size(); ++m) {
    if (matrices[m].name != "model.layers.1.mlp.gate_proj.weight") continue;
    flipped_bits = adapter.sign_bytes[m];
    flipped_bits[size_t(9 * sign_row_bytes(matrices[m].in))] ^= 1u << 2;  // row 9, column 2
    matrices[m].sign.data = flipped_bits.data();
  }
  ASSERT_FALSE(flipped_bits.empty());
  const LlamaDelta flipped = make_llama_delta(weights, checkpoint.dir(), matrices, adapter.exact);
  const double flipped_error = test::max_relative_error(inference_logits(weights, ids, &flipped),
                                                        inference_logits(weights, ids, &fused));
  std::printf("with S[9, 2] of layers.1.mlp.gate_proj flipped: inference moved %.2e\n",
              flipped_error);
  EXPECT_GT(flipped_error, 1.4e-5);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, FusedForward,
                         ::testing::Values(Setup{DType::F32, false}, Setup{DType::F32, true},
                                           Setup{DType::BF16, false}, Setup{DType::F16, true}),
                         [](const ::testing::TestParamInfo<Setup>& info) {
                           return std::string(dtype_name(info.param.dtype)) +
                                  (info.param.tied ? "_tied" : "_untied");
                         });

// Scale overrides are views: writing the buffer changes the next forward, with no rebuild.
TEST(LlamaDelta, ScaleOverridesAreReadAtEveryForward) {
  const LlamaConfig config = small_config(false);
  const LlamaParams base = test::random_llama_params(config, 21, 0.3f, 0.1f);
  const LlamaParams finetune = test::finetune_of(base, 0.05f, 22);
  InMemoryAdapter adapter = test::compress_in_memory(base, finetune, mlp, {}, DType::F32);
  ScratchDir scratch;
  save_params(scratch / "base", base, DType::F32);
  const Checkpoint checkpoint(scratch / "base");
  std::vector<std::vector<float>> overrides = adapter.scale_values;
  std::vector<float*> pointers;
  for (std::vector<float>& s : overrides) pointers.push_back(s.data());
  const LlamaWeights weights = weights_from_checkpoint(checkpoint);
  const LlamaDelta fused =
      make_llama_delta(weights, checkpoint.dir(), adapter.matrices, adapter.exact, pointers);

  std::vector<int32_t> ids(25);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7) % 37);
  for (size_t m = 0; m < overrides.size(); ++m) {
    for (size_t k = 0; k < overrides[m].size(); ++k) {
      overrides[m][k] *= 1.7f;
      adapter.scale_values[m][k] = overrides[m][k];  // the dense reference with the new scales
    }
  }
  const std::vector<float> want =
      inference_logits(test::apply_in_memory(base, adapter).weights(), ids);
  // As MatchesTheDenselyAppliedModel's inference tolerance, with the scales 1.7x as large.
  EXPECT_LT(test::max_relative_error(inference_logits(weights, ids, &fused), want), 2.4e-4);
}

// y = x·(W + γ ⊙ S)ᵀ and dx = dy · (W + γ ⊙ S) for F32 and BF16 W, per-row and per-matrix γ;
// dW = dyᵀ · x is the base weight's gradient, unaffected by the delta. x and dy have
// magnitudes in [0.5, 1), so that one flipped sign of S moves y and dx by at least 2·γ·0.5 = 0.1,
// far above the bound (two F32 products of 21 or 13 terms); the test shows that flipping the
// least visible sign fails it.
TEST(LinearDelta, ForwardAndBackwardAreTheDenseProducts) {
  const int64_t rows = 11, O = 13, I = 21;
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> magnitude(0.5f, 1.0f);
  std::vector<float> W(size_t(O * I)), x(size_t(rows * I)), dy(size_t(rows * O)), delta(W.size());
  for (std::vector<float>* v : {&W, &delta})
    for (float& value : *v) value = normal(rng);
  for (std::vector<float>* v : {&x, &dy})
    for (float& value : *v) value = magnitude(rng) * (rng() & 1 ? 1.0f : -1.0f);
  std::vector<float> row_scale(static_cast<size_t>(O));
  for (float& g : row_scale) g = 0.1f + 0.05f * std::fabs(normal(rng));
  const float matrix_scale = 0.2f;
  const std::vector<uint8_t> bits = test::pack_signs(delta.data(), O, I);
  // The least visible sign: the row with the smallest scale, the column where x is smallest.
  const int64_t flip_o = std::min_element(row_scale.begin(), row_scale.end()) - row_scale.begin();
  int64_t flip_i = 0;
  double smallest = HUGE_VAL;
  for (int64_t i = 0; i < I; ++i) {
    double largest = 0;
    for (int64_t r = 0; r < rows; ++r)
      largest = std::max(largest, double(std::fabs(x[size_t(r * I + i)])));
    if (largest < smallest) smallest = largest, flip_i = i;
  }
  std::vector<uint8_t> flipped = bits;
  flipped[size_t(flip_o * ((I + 7) / 8) + flip_i / 8)] ^= uint8_t(1u << (flip_i % 8));
  const double u = std::ldexp(1.0, -24);

  for (DType dtype : {DType::F32, DType::BF16}) {
    std::vector<uint8_t> stored(W.size() * dtype_size(dtype));
    from_f32(dtype, W.data(), stored.data(), W.size());
    std::vector<float> values(W.size());
    to_f32(dtype, stored.data(), values.data(), W.size());
    for (bool per_row : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + (per_row ? " per row" : " per matrix"));
      const float* scale = per_row ? row_scale.data() : &matrix_scale;
      auto run = [&](const std::vector<uint8_t>& signs, std::vector<float>& y,
                     std::vector<float>& dx, std::vector<float>& dW) {
        const Linear linear("test.weight", TensorView{dtype, {O, I}, stored.data()}, /*slot=*/0);
        LlamaDelta delta;
        delta.linears = {LinearDelta{.sign = SignDelta{signs.data(), scale, per_row}, .exact = {}}};
        const RowSegment all_rows[] = {{0, rows, &delta}};
        y.assign(size_t(rows * O), 0.0f);
        dx.assign(size_t(rows * I), 0.0f);
        dW.assign(W.size(), 0.0f);
        linear_forward(y.data(), x.data(), linear, rows, all_rows);
        linear_backward(dx.data(), dW.data(), dy.data(), x.data(), linear, rows, all_rows);
      };
      auto gamma = [&](int64_t o) { return double(scale[per_row ? o : 0]); };
      // W·x and γ·(S·x) are two products of n terms in F32 plus their sum: within
      // 2·γ_{n+1}·Σ|x|·(|W| + γ) (Higham's γ_n = n·u / (1 − n·u)).
      auto higham = [&](int64_t n) { return double(n + 1) * u / (1 - double(n + 1) * u); };
      std::vector<double> want_y(size_t(rows * O)), y_bound(want_y.size());
      std::vector<double> want_dx(size_t(rows * I)), dx_bound(want_dx.size());
      std::vector<double> want_dW(W.size()), dW_bound(W.size());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t o = 0; o < O; ++o) {
          double sum = 0, size = 0;
          for (int64_t i = 0; i < I; ++i) {
            const double w = values[size_t(o * I + i)];
            sum += x[size_t(r * I + i)] * (w + gamma(o) * test::unpacked_sign(bits, I, o, i));
            size += std::fabs(x[size_t(r * I + i)]) * (std::fabs(w) + gamma(o));
          }
          want_y[size_t(r * O + o)] = sum;
          y_bound[size_t(r * O + o)] = 2 * higham(I) * size;
        }
        for (int64_t i = 0; i < I; ++i) {
          double sum = 0, size = 0;
          for (int64_t o = 0; o < O; ++o) {
            const double w = values[size_t(o * I + i)];
            sum += dy[size_t(r * O + o)] * (w + gamma(o) * test::unpacked_sign(bits, I, o, i));
            size += std::fabs(dy[size_t(r * O + o)]) * (std::fabs(w) + gamma(o));
          }
          want_dx[size_t(r * I + i)] = sum;
          dx_bound[size_t(r * I + i)] = 2 * higham(O) * size;
        }
      }
      for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i) {
          double sum = 0, size = 0;
          for (int64_t r = 0; r < rows; ++r) {
            sum += double(dy[size_t(r * O + o)]) * x[size_t(r * I + i)];
            size += std::fabs(double(dy[size_t(r * O + o)]) * x[size_t(r * I + i)]);
          }
          want_dW[size_t(o * I + i)] = sum;
          dW_bound[size_t(o * I + i)] = higham(rows) * size;
        }
      auto bound = [](const std::vector<double>& b) {
        return [&b](int64_t i) { return b[size_t(i)]; };
      };

      std::vector<float> y, dx, dW;
      run(bits, y, dx, dW);
      EXPECT_TRUE(test::all_within(y.data(), want_y.data(), rows * O, bound(y_bound))) << "y";
      EXPECT_TRUE(test::all_within(dx.data(), want_dx.data(), rows * I, bound(dx_bound))) << "dx";
      EXPECT_TRUE(test::all_within(dW.data(), want_dW.data(), O * I, bound(dW_bound))) << "dW";

      // One flipped sign in the delta's bits: y and dx leave their bounds, dW does not move.
      run(flipped, y, dx, dW);
      const test::ElementwiseError y_error =
          test::elementwise_error(y.data(), want_y.data(), rows * O, bound(y_bound));
      const test::ElementwiseError dx_error =
          test::elementwise_error(dx.data(), want_dx.data(), rows * I, bound(dx_bound));
      EXPECT_GT(y_error.worst, 1.0);
      EXPECT_GT(dx_error.worst, 1.0);
      EXPECT_TRUE(test::all_within(dW.data(), want_dW.data(), O * I, bound(dW_bound)));
      std::printf("%s %s: S[%lld, %lld] flipped: y off by %.3g (bound %.3g), dx by %.3g (%.3g)\n",
                  std::string(dtype_name(dtype)).c_str(), per_row ? "per row" : "per matrix",
                  (long long)flip_o, (long long)flip_i, y_error.worst_difference,
                  y_error.worst_bound, dx_error.worst_difference, dx_error.worst_bound);
    }
  }
}

// One call over a served step's rows: rows without an adapter, long segments (the base and
// their signs in one merged product), short ones (the base product of the other rows, gathered,
// then table lookups) and an exact delta, with and without accumulation: each row within its
// bound of the float64 product with its own adapter (two F32 products as above, plus for the
// lookup rows x's 14-bit quantization, γ·I·step/2), and one flipped sign of each adapter leaves
// the bound on its rows only.
TEST(LinearDelta, SegmentsOfEveryLengthInOneCall) {
  const int64_t O = 13, I = 21, rows = 35;
  std::mt19937 rng(8);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> magnitude(0.5f, 1.0f);
  std::vector<float> W(size_t(O * I)), x(size_t(rows * I)), y0(size_t(rows * O)), exact(W.size());
  for (std::vector<float>* v : {&W, &y0, &exact})
    for (float& value : *v) value = normal(rng);
  for (float& value : x) value = magnitude(rng) * (rng() & 1 ? 1.0f : -1.0f);
  struct User {
    std::vector<uint8_t> bits;
    std::vector<float> scale;
    bool per_row;
  };
  std::vector<User> users;
  for (int u = 0; u < 3; ++u) {
    std::vector<float> delta(W.size());
    for (float& value : delta) value = normal(rng);
    std::vector<float> scale(u % 2 ? size_t(O) : 1);
    for (float& g : scale) g = 0.1f + 0.05f * std::fabs(normal(rng));
    users.push_back({test::pack_signs(delta.data(), O, I), scale, u % 2 == 1});
  }
  // Rows: 0-1 base, 2-11 user 0 (merged), 12-23 user 1 (lookups: its segment takes the
  // generation bound), 24 base, 25-33 user 0 again (merged), 34 user 2 (lookups, plus an exact
  // delta).
  static_assert(kSignGemvMaxTokens < 12 && 12 <= kGenerateLookupMaxTokens);
  const std::vector<std::pair<int64_t, int>> runs = {{2, -1}, {10, 0}, {12, 1},
                                                     {1, -1}, {9, 0},  {1, 2}};
  std::vector<int> user_of_row;
  for (const auto& run : runs) user_of_row.insert(user_of_row.end(), size_t(run.first), run.second);
  const Linear linear("test.weight", TensorView{DType::F32, {O, I}, W.data()}, /*slot=*/0);
  const double u = std::ldexp(1.0, -24);
  auto higham = [&](int64_t n) { return double(n + 1) * u / (1 - double(n + 1) * u); };

  for (const bool accumulate : {false, true}) {
    SCOPED_TRACE(accumulate ? "accumulate" : "overwrite");
    auto run = [&](const std::vector<User>& with, int64_t user1_lookup_rows) {
      std::vector<LlamaDelta> deltas(with.size());
      for (size_t k = 0; k < with.size(); ++k)
        deltas[k].linears = {LinearDelta{
            .sign = SignDelta{with[k].bits.data(), with[k].scale.data(), with[k].per_row},
            .exact = k == 2 ? TensorView{DType::F32, {O, I}, exact.data()} : TensorView{}}};
      std::vector<RowSegment> segments;
      int64_t row = 0;
      for (const auto& [count, user] : runs) {
        if (user >= 0)
          segments.push_back({row, count, &deltas[size_t(user)],
                              user == 1 ? user1_lookup_rows : kSignGemvMaxTokens});
        row += count;
      }
      std::vector<float> y = y0;
      linear_forward(y.data(), x.data(), linear, rows, segments, accumulate);
      return y;
    };
    std::vector<double> want(size_t(rows * O)), bound(want.size()), f32_bound(want.size());
    for (int64_t r = 0; r < rows; ++r) {
      const int user = user_of_row[size_t(r)];
      double max_x = 0;
      for (int64_t i = 0; i < I; ++i)
        max_x = std::max(max_x, double(std::fabs(x[size_t(r * I + i)])));
      const bool lookups = user == 1 || user == 2;
      for (int64_t o = 0; o < O; ++o) {
        double sum = accumulate ? y0[size_t(r * O + o)] : 0.0, size = std::fabs(sum);
        const double gamma =
            user < 0 ? 0.0 : users[size_t(user)].scale[users[size_t(user)].per_row ? size_t(o) : 0];
        for (int64_t i = 0; i < I; ++i) {
          double w = W[size_t(o * I + i)];
          if (user >= 0) w += gamma * test::unpacked_sign(users[size_t(user)].bits, I, o, i);
          if (user == 2) w += exact[size_t(o * I + i)];
          sum += x[size_t(r * I + i)] * w;
          size += std::fabs(x[size_t(r * I + i)]) *
                  (std::fabs(W[size_t(o * I + i)]) + gamma +
                   (user == 2 ? std::fabs(exact[size_t(o * I + i)]) : 0.0));
        }
        want[size_t(r * O + o)] = sum;
        f32_bound[size_t(r * O + o)] = 3 * higham(I) * size;
        bound[size_t(r * O + o)] =
            3 * higham(I) * size + (lookups ? gamma * double(I) * max_x / 8191 / 2 : 0.0);
      }
    }
    auto within = [&](int64_t i) { return bound[size_t(i)]; };
    const std::vector<float> y = run(users, kGenerateLookupMaxTokens);
    EXPECT_TRUE(test::all_within(y.data(), want.data(), rows * O, within));
    // User 1's rows took the quantized lookups (some miss F32 rounding), and with the default
    // bound the same 12 rows are merged, exact to F32 rounding.
    int64_t quantized = 0;
    for (int64_t i = 12 * O; i < 24 * O; ++i)
      quantized += std::fabs(y[size_t(i)] - want[size_t(i)]) > f32_bound[size_t(i)];
    EXPECT_GT(quantized, 0);
    const std::vector<float> exact_rows = run(users, kSignGemvMaxTokens);
    for (int64_t i = 12 * O; i < 24 * O; ++i)
      EXPECT_NEAR(exact_rows[size_t(i)], want[size_t(i)], f32_bound[size_t(i)]) << i;
    for (size_t k = 0; k < users.size(); ++k) {
      std::vector<User> flipped = users;
      flipped[k].bits[0] ^= 1;  // S[0, 0]: row 0 of every one of the user's rows moves by 2γ|x|
      const std::vector<float> moved = run(flipped, kGenerateLookupMaxTokens);
      for (int64_t r = 0; r < rows; ++r) {
        const bool own = user_of_row[size_t(r)] == int(k);
        const double off = std::fabs(moved[size_t(r * O)] - want[size_t(r * O)]);
        EXPECT_EQ(off > bound[size_t(r * O)], own) << "user " << k << " row " << r;
      }
    }
  }
}

TEST(LlamaDelta, RejectsAdaptersThatDoNotFit) {
  const LlamaConfig config = small_config(true);
  const LlamaParams base = test::random_llama_params(config, 31, 0.3f, 0.1f);
  const LlamaParams finetune = test::finetune_of(base, 0.05f, 32);
  ScratchDir scratch;
  save_params(scratch / "base", base, DType::F32);
  const Checkpoint checkpoint(scratch / "base");
  const LlamaWeights weights = weights_from_checkpoint(checkpoint);
  auto fresh = [&] {
    return test::compress_in_memory(base, finetune, mlp, {"model.norm.weight"}, DType::F32);
  };
  auto build = [&](const InMemoryAdapter& a, std::vector<float*> scales = {}) {
    return
        [&weights, &a, scales] { make_llama_delta(weights, "base", a.matrices, a.exact, scales); };
  };

  InMemoryAdapter a = fresh();
  a.matrices[0].name = "model.layers.0.self_attn.qq_proj.weight";
  test::expect_error(build(a), {"qq_proj", "not a linear layer"});
  a = fresh();
  a.matrices[0].name = "model.embed_tokens.weight";  // tied: the head is the embedding
  test::expect_error(build(a), {"model.embed_tokens.weight", "not a linear layer"});
  a = fresh();
  a.matrices[1].name = a.matrices[0].name;
  test::expect_error(build(a), {a.matrices[0].name, "twice"});
  a = fresh();
  a.matrices[0].in += 1;
  test::expect_error(build(a), {a.matrices[0].name, "the base's is"});
  a = fresh();
  a.matrices[2].sign.shape[1] += 1;
  test::expect_error(build(a), {a.matrices[2].name + ".sign", "must be U8"});
  a = fresh();
  a.matrices[3].scale.shape = {2};
  test::expect_error(build(a), {a.matrices[3].name + ".scale", "must be F32"});
  a = fresh();
  a.exact[0].name = "model.layers.7.input_layernorm.weight";
  test::expect_error(build(a), {"model.layers.7.input_layernorm.weight", "not in the base"});
  a = fresh();
  a.exact[0].delta.shape = {3};
  test::expect_error(build(a), {"model.norm.weight.delta", "the base's is"});
  a = fresh();
  a.exact.push_back(AdapterExact{
      a.matrices[0].name,
      TensorView{
          DType::F32, {a.matrices[0].out, a.matrices[0].in}, base.find(a.matrices[0].name)}});
  test::expect_error(build(a), {a.matrices[0].name, "both compressed and as an exact delta"});
  a = fresh();
  test::expect_error(build(a, {a.scale_pointers()[0]}), {"1 scale overrides for"});
}

// `bitdelta eval` and `generate` with --delta against the same commands on the dense model that
// W + γ·S gives (saved as an F32 checkpoint), and the refusal of a base the adapter was not made
// for.
class CliDelta : public ::testing::Test {
 protected:
  void SetUp() override {
    LlamaConfig config = small_config(false);
    config.vocab_size = kByteVocabSize;
    config.max_position_embeddings = 64;
    config.bos_token_id = kByteBosId;
    config.eos_token_id = kByteEosId;
    // Wide logits, so that greedy decoding rarely meets a near tie.
    base_ = test::random_llama_params(config, 61, 1.0f, 0.1f);
    const LlamaParams finetune = test::finetune_of(base_, 0.2f, 62);
    adapter_ = test::compress_in_memory(
        base_, finetune, [](const std::string&) { return true; }, test::exact_tensor_names(config),
        DType::F32);
    save_checkpoint(scratch_ / "base", config, base_.named_tensors(), byte_tokenizer_json(), {},
                    false);
    save_checkpoint(scratch_ / "dense", config,
                    test::apply_in_memory(base_, adapter_).named_tensors(), byte_tokenizer_json(),
                    {}, false);
    AdapterInfo info;
    info.base_fingerprint = Checkpoint(scratch_ / "base").fingerprint();
    info.finetune_fingerprint = std::string(64, 'a');
    info.scale_mode = "mean";
    info.granularity = "row";
    info.tool_version = "test";
    info.created = "2026-11-27T10:00:00Z";
    write_adapter(scratch_ / "user.bitdelta", info, adapter_.matrices, adapter_.exact, false);
    text_ =
        scratch_.write("text.txt", "A fine-tune kept as one bit per weight and a scale per row.");
  }
  test::CommandResult bitdelta(const std::string& arguments) {
    return test::run_bitdelta(arguments, scratch_);
  }

  ScratchDir scratch_;
  LlamaParams base_{small_config(false)};
  InMemoryAdapter adapter_;
  std::string text_;
};

TEST_F(CliDelta, EvalAndGenerateMatchTheDenseModel) {
  const std::string delta = scratch_ / "user.bitdelta";
  const auto fused = bitdelta("eval --model " + scratch_ / "base" + " --delta " + delta +
                              " --data " + text_ + " --context 16 --json");
  const auto dense =
      bitdelta("eval --model " + scratch_ / "dense" + " --data " + text_ + " --context 16 --json");
  const auto base =
      bitdelta("eval --model " + scratch_ / "base" + " --data " + text_ + " --context 16 --json");
  ASSERT_EQ(fused.exit_code, 0) << fused.err;
  ASSERT_EQ(dense.exit_code, 0) << dense.err;
  ASSERT_EQ(base.exit_code, 0) << base.err;
  const nlohmann::json f = nlohmann::json::parse(fused.out), d = nlohmann::json::parse(dense.out);
  EXPECT_EQ(f["delta"], delta);
  EXPECT_FALSE(d.contains("delta"));
  EXPECT_EQ(f["tokens"], d["tokens"]);
  const double nll = d["nll"].get<double>();
  EXPECT_NEAR(f["nll"].get<double>(), nll, 1e-5 * nll);
  EXPECT_GT(std::fabs(nlohmann::json::parse(base.out)["nll"].get<double>() - nll), 1e-2 * nll);

  const std::string prompt = " --prompt 'One bit' -n 24 --temperature 0 --json";
  const auto fused_text =
      bitdelta("generate --model " + scratch_ / "base" + " --delta " + delta + prompt);
  const auto dense_text = bitdelta("generate --model " + scratch_ / "dense" + prompt);
  ASSERT_EQ(fused_text.exit_code, 0) << fused_text.err;
  ASSERT_EQ(dense_text.exit_code, 0) << dense_text.err;
  EXPECT_EQ(nlohmann::json::parse(fused_text.out)["delta"], delta);
  const nlohmann::json tokens = nlohmann::json::parse(fused_text.out)["tokens"];
  EXPECT_GE(tokens.size(), 8u);
  EXPECT_EQ(tokens, nlohmann::json::parse(dense_text.out)["tokens"]);
}

TEST_F(CliDelta, RefusesAnotherBaseOrAMissingAdapter) {
  const std::string delta = scratch_ / "user.bitdelta";
  // The dense model has the same names and shapes but another fingerprint.
  test::expect_refusal(
      bitdelta("eval --model " + scratch_ / "dense" + " --delta " + delta + " --data " + text_), 1,
      {delta, "fingerprint"});
  test::expect_refusal(bitdelta("generate --model " + scratch_ / "dense" + " --delta " + delta +
                                " --prompt hi -n 2"),
                       1, {delta, "fingerprint"});
  test::expect_refusal(bitdelta("eval --model " + scratch_ / "base" + " --delta " +
                                scratch_ / "none.bitdelta" + " --data " + text_),
                       1, {"none.bitdelta"});
}

}  // namespace
}  // namespace bd
