// bitdelta eval and generate end to end, checked against the independent PyTorch reference
// (tests/reference/llama_ref.py): windowed NLL, greedy decoding, seeding, and every refusal.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/byte_tokenizer.h"
#include "model/llama_params.h"
#include "test_util.h"

namespace bd {
namespace {

using nlohmann::json;
using test::expect_refusal;
using test::run_bitdelta;
using test::ScratchDir;

// A random byte-level model (GQA, untied head) with logits spread wide enough that greedy
// decoding rarely meets a near tie.
std::string make_model(const ScratchDir& scratch) {
  LlamaConfig config = test::llama_config({.vocab = 258,
                                           .hidden = 48,
                                           .intermediate = 80,
                                           .layers = 2,
                                           .heads = 4,
                                           .kv_heads = 2,
                                           .head_dim = 12,
                                           .rms_norm_eps = 1e-5,
                                           .max_positions = 64});
  config.bos_token_id = 256;
  config.eos_token_id = 257;
  LlamaParams params(config);
  params.init_random(3);
  for (size_t i = 0; i < params.size(); ++i) params.data()[i] *= 4.0f;
  const std::string dir = scratch / "model";
  save_checkpoint(dir, config, params.named_tensors(), byte_tokenizer_json(), {}, false);
  return dir;
}

std::string ids_text(const std::vector<int32_t>& ids) {
  std::ostringstream out;
  for (int32_t id : ids) out << id << ' ';
  return out.str();
}

// Runs llama_ref.py on each token list; returns, per list, its loss and logits [T, V].
struct RefOutput {
  float loss;
  std::vector<float> logits;
};
std::vector<RefOutput> reference(const std::string& model,
                                 const std::vector<std::vector<int32_t>>& inputs,
                                 const std::vector<std::vector<int32_t>>& targets,
                                 const ScratchDir& scratch) {
  std::string args;
  for (size_t i = 0; i < inputs.size(); ++i) {
    json case_json = {{"tokens", {inputs[i]}}, {"targets", {targets[i]}}};
    const std::string in = scratch.write("case" + std::to_string(i) + ".json", case_json.dump());
    args += " " + model + " " + in + " " + (scratch / ("out" + std::to_string(i) + ".safetensors"));
  }
  test::CommandResult run = test::run_reference("llama_ref.py", args, scratch);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  std::vector<RefOutput> outputs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    SafetensorsFile file(scratch / ("out" + std::to_string(i) + ".safetensors"));
    const TensorView& logits = file.get("logits");
    outputs.push_back(
        {file.get("loss").as<float>()[0],
         std::vector<float>(logits.as<float>(), logits.as<float>() + logits.numel())});
  }
  return outputs;
}

class CliEval : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::have_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
    model_ = make_model(scratch_);
  }
  ScratchDir scratch_;
  std::string model_;
};

TEST_F(CliEval, WindowedNllMatchesPyTorch) {
  // 23 tokens in windows of 7: 7, 7, 7, 2 tokens, predicting 6 + 6 + 6 + 1 = 19.
  std::mt19937 rng(5);
  std::vector<int32_t> ids(23);
  for (int32_t& id : ids) id = int32_t(rng() % 258);
  const std::string ids_path = scratch_.write("ids.txt", ids_text(ids) + "\n");
  test::CommandResult run = run_bitdelta(
      "eval --model " + model_ + " --tokens " + ids_path + " --context 7 --json", scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  json result = json::parse(run.out);
  ASSERT_EQ(result["tokens"], 19);

  std::vector<std::vector<int32_t>> inputs, targets;
  for (size_t start = 0; start < ids.size(); start += 7) {
    size_t end = std::min(ids.size(), start + 7);
    inputs.emplace_back(ids.begin() + start, ids.begin() + end - 1);
    targets.emplace_back(ids.begin() + start + 1, ids.begin() + end);
  }
  std::vector<RefOutput> ref = reference(model_, inputs, targets, scratch_);
  double nll_sum = 0;
  for (size_t w = 0; w < ref.size(); ++w)
    nll_sum += double(ref[w].loss) * double(targets[w].size());
  const double expected = nll_sum / 19.0;
  // Tolerance: F32 forward in both; 1e-5 relative is ~100x the observed difference.
  EXPECT_NEAR(result["nll"].get<double>(), expected, 1e-5 * expected);
  EXPECT_NEAR(result["ppl"].get<double>(), std::exp(expected), 1e-5 * std::exp(expected));
}

TEST_F(CliEval, TextAndTokenIdsAgree) {
  const std::string text =
      "It is a truth universally acknowledged, that a single bit must be in want of a scale.";
  const std::string data = scratch_.write("text.txt", text);
  std::vector<int32_t> bytes(text.begin(), text.end());
  const std::string ids = scratch_.write("ids.txt", ids_text(bytes));
  test::CommandResult by_text =
      run_bitdelta("eval --model " + model_ + " --data " + data + " --context 16 --json", scratch_);
  test::CommandResult by_ids = run_bitdelta(
      "eval --model " + model_ + " --tokens " + ids + " --context 16 --json", scratch_);
  ASSERT_EQ(by_text.exit_code, 0) << by_text.err;
  ASSERT_EQ(by_ids.exit_code, 0) << by_ids.err;
  EXPECT_EQ(json::parse(by_text.out)["nll"], json::parse(by_ids.out)["nll"]);
  EXPECT_EQ(json::parse(by_text.out)["tokens"], int(text.size()) - (int(text.size()) + 15) / 16);
}

TEST_F(CliEval, GreedyGenerationFollowsReferenceArgmax) {
  test::CommandResult run = run_bitdelta(
      "generate --model " + model_ + " --prompt 'Hello' -n 12 --temperature 0 --json", scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::vector<int32_t> generated = json::parse(run.out)["tokens"].get<std::vector<int32_t>>();
  ASSERT_FALSE(generated.empty());
  // The prompt as the tokenizer encodes it with special tokens: BOS, then the bytes.
  std::vector<int32_t> sequence = {256, 'H', 'e', 'l', 'l', 'o'};
  const size_t prompt_length = sequence.size();
  sequence.insert(sequence.end(), generated.begin(), generated.end());
  std::vector<int32_t> inputs(sequence.begin(), sequence.end() - 1);
  std::vector<int32_t> targets(inputs.size(), -1);
  targets.back() = sequence.back();
  std::vector<RefOutput> ref = reference(model_, {inputs}, {targets}, scratch_);
  const int64_t V = 258;
  int checked = 0;
  for (size_t i = 0; i < generated.size(); ++i) {
    const float* row = ref[0].logits.data() + (prompt_length - 1 + i) * V;
    std::vector<float> sorted(row, row + V);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    if (sorted[0] - sorted[1] < 1e-3f) continue;  // a near tie: either choice is right
    EXPECT_EQ(generated[i], std::max_element(row, row + V) - row) << "token " << i;
    ++checked;
  }
  EXPECT_GE(checked, int(generated.size()) / 2);
}

TEST_F(CliEval, SamplingIsSeeded) {
  auto sample = [&](int seed) {
    test::CommandResult run = run_bitdelta("generate --model " + model_ +
                                               " --prompt 'abc' -n 20 --temperature 1.5 --top-k 0 "
                                               "--top-p 1 --seed " +
                                               std::to_string(seed) + " --json",
                                           scratch_);
    EXPECT_EQ(run.exit_code, 0) << run.err;
    return json::parse(run.out)["tokens"];
  };
  EXPECT_EQ(sample(1), sample(1));
  EXPECT_NE(sample(1), sample(2));
}

TEST_F(CliEval, RefusesBadInput) {
  const std::string oov = scratch_.write("oov.txt", "1 2 300 4");
  const std::string junk = scratch_.write("junk.txt", "1 2 x3 4");
  const std::string ok = scratch_.write("ok.txt", "1 2 3 4");
  const std::string m = "--model " + model_;
  expect_refusal(run_bitdelta("eval " + m + " --tokens " + oov, scratch_), 1, {"300"});
  expect_refusal(run_bitdelta("eval " + m + " --tokens " + junk, scratch_), 1, {"not an integer"});
  expect_refusal(run_bitdelta("eval " + m + " --tokens " + ok + " --data " + ok, scratch_), 2,
                 {"exactly one"});
  expect_refusal(run_bitdelta("eval " + m + " --tokens /nonexistent/ids.txt", scratch_), 1,
                 {"/nonexistent/ids.txt"});
  expect_refusal(run_bitdelta("eval " + m + " --tokens " + ok + " --context 1", scratch_), 2,
                 {"--context"});
  expect_refusal(run_bitdelta("eval --model /nonexistent/model --tokens " + ok, scratch_), 1,
                 {"/nonexistent/model"});
  expect_refusal(run_bitdelta("generate " + m + " --prompt hi -n 100", scratch_), 1, {"context"});
  expect_refusal(run_bitdelta("generate " + m + " --prompt hi --temperature -1", scratch_), 1,
                 {"temperature"});
  expect_refusal(run_bitdelta("generate " + m, scratch_), 2, {"--prompt"});
}

}  // namespace
}  // namespace bd
