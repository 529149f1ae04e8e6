// Parity with an independent PyTorch Llama (tests/reference/llama_ref.py, float32, written from
// the Hugging Face formulas with its own numpy safetensors reader): for several random configs
// the C++ side writes a checkpoint folder and a token batch, the script writes its logits, loss
// and the gradient of every parameter, and each must agree to
//   relative error = max|ours - torch| / max|torch| <= 1e-4, per tensor.
// Configs cover GQA and MHA, untied and tied heads, head_dim != hidden/heads, odd sizes,
// sequence lengths 1 and > 64, and rope_scaling none / linear / llama3. The inference forward
// (prefill through the KV cache, then decode) is compared with the same logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/llama_params.h"
#include "test_util.h"

namespace bd {
namespace {

constexpr double kTolerance = 1e-4;

struct ParityCase {
  std::string label;
  LlamaConfig config;
  int64_t B, T;
};

LlamaConfig base_config() {
  return test::llama_config({.vocab = 67,
                             .hidden = 48,
                             .intermediate = 80,
                             .layers = 2,
                             .heads = 6,
                             .kv_heads = 2,
                             .head_dim = 10,  // hidden / heads = 8
                             .rms_norm_eps = 1e-5,
                             .rope_theta = 10000.0,
                             .max_positions = 128});
}

std::vector<ParityCase> parity_cases() {
  std::vector<ParityCase> cases;
  {
    ParityCase p{"gqa_untied_odd_sizes_T70", base_config(), 2, 70};
    cases.push_back(p);
  }
  {
    ParityCase p{"mha_tied_linear_rope_T1", base_config(), 3, 1};
    p.config.num_attention_heads = p.config.num_key_value_heads = 4;
    p.config.head_dim = 12;  // = hidden / heads
    p.config.tie_word_embeddings = true;
    p.config.rope_scaling.type = RopeScaling::Type::Linear;
    p.config.rope_scaling.factor = 2.5;
    cases.push_back(p);
  }
  {
    ParityCase p{"gqa_one_kv_head_llama3_rope_T67", base_config(), 1, 67};
    p.config.vocab_size = 53;
    p.config.hidden_size = 40;
    p.config.intermediate_size = 72;
    p.config.num_hidden_layers = 3;
    p.config.num_attention_heads = 4;
    p.config.num_key_value_heads = 1;
    p.config.head_dim = 16;  // hidden / heads = 10
    p.config.rope_scaling.type = RopeScaling::Type::Llama3;
    p.config.rope_scaling.factor = 8.0;
    p.config.rope_scaling.low_freq_factor = 1.0;
    p.config.rope_scaling.high_freq_factor = 4.0;
    // Wavelengths at head_dim 16 run from 6 to 2·10⁴: all three llama3 regimes occur.
    p.config.rope_scaling.original_max_position_embeddings = 32;
    cases.push_back(p);
  }
  {
    ParityCase p{"gqa_tied_T9_batch4", base_config(), 4, 9};
    p.config.tie_word_embeddings = true;
    p.config.num_attention_heads = 8;
    p.config.num_key_value_heads = 4;
    p.config.head_dim = 6;
    p.config.rope_theta = 500000.0;
    cases.push_back(p);
  }
  return cases;
}

// Weights N(0, 0.15²) (norms 1 + N(0, 0.1²)): large enough that attention is far from uniform
// and the loss far from log V.
LlamaParams random_params(const LlamaConfig& config, uint64_t seed) {
  return test::random_llama_params(config, seed, 0.15f, 0.1f);
}

// max|ours - torch| / max|torch|; the plain difference where torch's tensor is all zeros (with
// T = 1 each query sees one key, so q_proj and k_proj get exactly zero gradient). Normwise per
// tensor, not per element: a gradient entry is a sum over positions that can cancel to near zero
// while its rounding error stays at the scale of the terms, and logits share one hidden state.
double parity_error(const float* ours, const float* torch, int64_t n) {
  const bool all_zero = std::all_of(torch, torch + n, [](float x) { return x == 0.0f; });
  return all_zero ? test::max_abs_difference(ours, torch, n)
                  : test::max_relative_error(ours, torch, n);
}

struct PreparedCase {
  std::string dir;                       // model/, inputs.json, torch.safetensors
  std::vector<int32_t> tokens, targets;  // [B·T]
};

PreparedCase prepare(const ParityCase& p, const std::string& dir) {
  PreparedCase prepared{dir, {}, {}};
  const int64_t rows = p.B * p.T, V = p.config.vocab_size;
  save_checkpoint(dir + "/model", p.config, random_params(p.config, 1234).named_tensors(), "", {},
                  true);
  std::mt19937_64 rng(99);
  for (int64_t i = 0; i < rows; ++i) {
    prepared.tokens.push_back(int32_t(rng() % uint64_t(V)));
    prepared.targets.push_back(rng() % 5 == 0 ? -1 : int32_t(rng() % uint64_t(V)));  // some ignored
  }
  prepared.targets[0] = 3;  // at least one counted target even for T = 1
  nlohmann::json inputs;
  for (int64_t b = 0; b < p.B; ++b) {
    auto row = [&](const std::vector<int32_t>& ids) {
      return std::vector<int32_t>(ids.begin() + b * p.T, ids.begin() + (b + 1) * p.T);
    };
    inputs["tokens"].push_back(row(prepared.tokens));
    inputs["targets"].push_back(row(prepared.targets));
  }
  test::write_bytes(dir + "/inputs.json", inputs.dump());
  return prepared;
}

void check_case(const ParityCase& p, const PreparedCase& prepared);

// One test over all configs, so the reference runs once (torch's import dominates its time).
TEST(TorchParity, LogitsLossAndEveryGradient) {
  if (!test::have_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
  const test::ScratchDir root;
  std::string arguments;
  std::vector<PreparedCase> prepared;
  for (const ParityCase& p : parity_cases()) {
    const std::string dir = root / p.label;
    prepared.push_back(prepare(p, dir));
    arguments += cat(" ", dir, "/model ", dir, "/inputs.json ", dir, "/torch.safetensors");
  }
  const test::CommandResult torch = test::run_reference("llama_ref.py", arguments, root);
  ASSERT_EQ(torch.exit_code, 0) << torch.err;
  for (size_t i = 0; i < prepared.size(); ++i) {
    SCOPED_TRACE(parity_cases()[i].label);
    check_case(parity_cases()[i], prepared[i]);
  }
}

void check_case(const ParityCase& p, const PreparedCase& prepared) {
  const std::vector<int32_t>& tokens = prepared.tokens;
  const std::vector<int32_t>& targets = prepared.targets;
  const std::string& dir = prepared.dir;
  const LlamaConfig& config = p.config;
  const int64_t rows = p.B * p.T, V = config.vocab_size;
  const SafetensorsFile torch(dir + "/torch.safetensors");

  // Ours: training forward + backward on the checkpoint as loaded from disk.
  const Checkpoint checkpoint(dir + "/model");
  const LlamaParams loaded = LlamaParams::from_checkpoint(checkpoint);
  const LlamaWeights weights = loaded.weights();
  LlamaParams grads(config);
  TrainActivations acts(config, p.B, p.T);
  const float loss = forward_train(weights, tokens.data(), targets.data(), p.B, p.T, acts);
  const double logits_error = parity_error(acts.logits, torch.get("logits").as<float>(), rows * V);
  EXPECT_LE(logits_error, kTolerance);
  EXPECT_NEAR(loss, torch.get("loss").as<float>()[0], kTolerance * loss);

  // Inference on the mapped checkpoint: prefill of all but the last token, then one decode step.
  const LlamaWeights mapped = weights_from_checkpoint(checkpoint);
  double inference_error = 0;
  for (int64_t b = 0; b < p.B; ++b) {
    KVCache cache(config, p.T);
    std::vector<float> logits(static_cast<size_t>(p.T * V));
    if (p.T > 1) forward(mapped, cache, &tokens[b * p.T], p.T - 1, logits.data(), true);
    forward(mapped, cache, &tokens[b * p.T + p.T - 1], 1, &logits[(p.T - 1) * V]);
    inference_error = std::max(
        inference_error,
        parity_error(logits.data(), torch.get("logits").as<float>() + b * p.T * V, p.T * V));
  }
  EXPECT_LE(inference_error, kTolerance);

  backward(weights, acts, grads);
  double worst = 0;
  std::string worst_name;
  for (const ParamSlice& slice : grads.slices()) {
    const TensorView& expected = torch.get("grad." + slice.name);
    ASSERT_EQ(expected.shape, slice.shape) << slice.name;
    const double error =
        parity_error(grads.data() + slice.offset, expected.as<float>(), int64_t(slice.numel));
    EXPECT_LE(error, kTolerance) << slice.name;
    if (error > worst) worst = error, worst_name = slice.name;
  }
  std::printf(
      "%s: logits %.2e, inference logits %.2e, loss %.6f vs %.6f, worst gradient %.2e (%s)\n",
      p.label.c_str(), logits_error, inference_error, loss, torch.get("loss").as<float>()[0], worst,
      worst_name.c_str());
}

}  // namespace
}  // namespace bd
