// DeltaWeights: a base model with a BitDelta adapter applied inside the forward. The fused model
// (y = W·x + γ ⊙ (S·x), S from packed bits) must give the logits of the densely applied model
// W + γ·S (built here in F32 from the unpacked bits) within F32 rounding, on every path: prefill,
// one-token decode (sign GEMV) and the training forward (widened SGEMM); and a linear with an
// overlay must back-propagate through W + γ·S. `bitdelta eval/generate --delta` run it end to end.
#include "delta/overlay.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "delta_test_util.h"
#include "io/adapter.h"
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
std::vector<float> inference_logits(const LlamaWeights& weights, const std::vector<int32_t>& ids) {
  const int64_t V = weights.config.vocab_size;
  KVCache cache(weights.config, 8);
  std::vector<float> logits(size_t(8 * V));
  forward(weights, cache, ids.data(), 5, logits.data(), /*all_logits=*/true);
  for (int64_t t = 5; t < 8; ++t)
    forward(weights, cache, &ids[size_t(t)], 1, &logits[size_t(t * V)]);
  return logits;
}

std::vector<float> training_logits(const LlamaWeights& weights, const std::vector<int32_t>& ids) {
  const int64_t B = 2, T = 12, V = weights.config.vocab_size;
  TrainActivations acts(weights.config, B, T);
  std::vector<int32_t> targets(ids.begin() + 1, ids.begin() + 1 + B * T);
  forward_train(weights, ids.data(), targets.data(), B, T, acts);
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
  const DeltaWeights fused(checkpoint, adapter.matrices, adapter.exact);
  const LlamaParams dense = test::apply_in_memory(base, adapter);

  std::mt19937 rng(3);
  std::vector<int32_t> ids(25);
  for (int32_t& id : ids) id = int32_t(rng() % config.vocab_size);

  const std::vector<float> want_inference = inference_logits(dense.weights(), ids);
  const double inference_error =
      test::max_relative_error(inference_logits(fused.weights(), ids), want_inference);
  const double training_error = test::max_relative_error(training_logits(fused.weights(), ids),
                                                         training_logits(dense.weights(), ids));
  // The overlay is not a no-op: the base alone is far from the applied model.
  const double base_distance = test::max_relative_error(
      inference_logits(weights_from_checkpoint(checkpoint), ids), want_inference);
  std::printf("max relative logit error: inference %.2e, training %.2e (base alone: %.2e)\n",
              inference_error, training_error, base_distance);
  // F32 rounding: W·x + γ(S·x) and (W + γS)·x differ by a few ulps per product, carried
  // through two layers.
  EXPECT_LT(inference_error, 2e-5);
  EXPECT_LT(training_error, 2e-5);
  EXPECT_GT(base_distance, 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, FusedForward,
                         ::testing::Values(Setup{DType::F32, false}, Setup{DType::F32, true},
                                           Setup{DType::BF16, false}, Setup{DType::F16, true}),
                         [](const ::testing::TestParamInfo<Setup>& info) {
                           return std::string(dtype_name(info.param.dtype)) +
                                  (info.param.tied ? "_tied" : "_untied");
                         });

// Scale overrides are views: writing the buffer changes the next forward, with no rebuild.
TEST(DeltaWeights, ScaleOverridesAreReadAtEveryForward) {
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
  const DeltaWeights fused(checkpoint, adapter.matrices, adapter.exact, pointers);

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
  EXPECT_LT(test::max_relative_error(inference_logits(fused.weights(), ids), want), 2e-5);
}

// dx = dy · (W + γ ⊙ S) for F32 and BF16 W, per-row and per-matrix γ; dW = dyᵀ · x is the base
// weight's gradient, unaffected by the overlay.
TEST(LinearOverlay, BackwardIsTheDenseProductsInput) {
  const int64_t rows = 11, O = 13, I = 21;
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  std::vector<float> W(size_t(O * I)), x(size_t(rows * I)), dy(size_t(rows * O)), delta(W.size());
  for (std::vector<float>* v : {&W, &x, &dy, &delta})
    for (float& value : *v) value = normal(rng);
  std::vector<float> row_scale(static_cast<size_t>(O));
  for (float& g : row_scale) g = 0.1f + 0.05f * std::fabs(normal(rng));
  const float matrix_scale = 0.2f;
  const std::vector<uint8_t> bits = test::pack_signs(delta.data(), O, I);

  for (DType dtype : {DType::F32, DType::BF16}) {
    std::vector<uint8_t> stored(W.size() * dtype_size(dtype));
    from_f32(dtype, W.data(), stored.data(), W.size());
    std::vector<float> values(W.size());
    to_f32(dtype, stored.data(), values.data(), W.size());
    for (bool per_row : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + (per_row ? " per row" : " per matrix"));
      const float* scale = per_row ? row_scale.data() : &matrix_scale;
      const Linear linear("test.weight", TensorView{dtype, {O, I}, stored.data()},
                          SignDelta{bits.data(), scale, per_row});
      std::vector<float> y(size_t(rows * O)), dx(size_t(rows * I)), dW(W.size(), 0.0f);
      linear_forward(y.data(), x.data(), linear, rows);
      linear_backward(dx.data(), dW.data(), dy.data(), x.data(), linear, rows);
      auto effective = [&](int64_t o, int64_t i) {
        return double(values[size_t(o * I + i)]) +
               double(scale[per_row ? o : 0]) * test::unpacked_sign(bits, I, o, i);
      };
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t o = 0; o < O; ++o) {
          double want = 0;
          for (int64_t i = 0; i < I; ++i) want += x[size_t(r * I + i)] * effective(o, i);
          EXPECT_NEAR(y[size_t(r * O + o)], want, 1e-5 * (1 + std::fabs(want)));
        }
        for (int64_t i = 0; i < I; ++i) {
          double want = 0;
          for (int64_t o = 0; o < O; ++o) want += dy[size_t(r * O + o)] * effective(o, i);
          EXPECT_NEAR(dx[size_t(r * I + i)], want, 1e-5 * (1 + std::fabs(want)));
        }
      }
      for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i) {
          double want = 0;
          for (int64_t r = 0; r < rows; ++r) want += dy[size_t(r * O + o)] * x[size_t(r * I + i)];
          EXPECT_NEAR(dW[size_t(o * I + i)], want, 1e-5 * (1 + std::fabs(want)));
        }
    }
  }
}

TEST(DeltaWeights, RejectsAdaptersThatDoNotFit) {
  const LlamaConfig config = small_config(true);
  const LlamaParams base = test::random_llama_params(config, 31, 0.3f, 0.1f);
  const LlamaParams finetune = test::finetune_of(base, 0.05f, 32);
  ScratchDir scratch;
  save_params(scratch / "base", base, DType::F32);
  const Checkpoint checkpoint(scratch / "base");
  auto fresh = [&] {
    return test::compress_in_memory(base, finetune, mlp, {"model.norm.weight"}, DType::F32);
  };
  auto build = [&](const InMemoryAdapter& a, std::vector<float*> scales = {}) {
    return [&checkpoint, &a, scales] { DeltaWeights(checkpoint, a.matrices, a.exact, scales); };
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
