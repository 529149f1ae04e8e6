// bitdelta train end to end: from scratch and fine-tuning, the output folder and its metadata,
// agreement of the reported held-out NLL with `bitdelta eval`, and every refusal (one line on
// stderr, non-zero exit, nothing written).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/mapped_file.h"
#include "core/sha256.h"
#include "io/checkpoint.h"
#include "model/byte_tokenizer.h"
#include "test_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using test::CommandResult;

std::string sha256_of(const std::string& text) {
  Sha256 hash;
  hash.update(text);
  return hash.hex_digest();
}

// English-like text with a voice of its own, long enough for a few hundred windows.
std::string training_text() {
  const char* lines[] = {
      "the quick brown fox jumps over the lazy dog.\n",
      "a stitch in time saves nine, said the tailor to the fox.\n",
      "all that glitters is not gold, but the dog did not care.\n",
      "the early bird catches the worm; the lazy dog sleeps in.\n",
  };
  std::string text;
  for (int i = 0; i < 40; ++i) text += lines[(i * 7) % 4];
  return text;
}

class CliTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = scratch_.write("config.json", R"({"vocab_size": 258, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": true})");
    data_ = scratch_.write("train.txt", training_text());
  }
  // A short from-scratch run: 40 steps of 4 windows of 32 tokens, one thread (deterministic).
  std::string scratch_args(const std::string& out) const {
    return "train --config " + config_ + " --data " + data_ + " -o " + out +
           " --steps 40 --batch 4 --seq 32 --lr 3e-3 --threads 1";
  }
  CommandResult run(const std::string& arguments) const {
    return test::run_bitdelta(arguments, scratch_);
  }

  test::ScratchDir scratch_;
  std::string dir_ = scratch_.path(), config_, data_;
};

TEST_F(CliTrain, TrainsFromScratchAndWritesAnHfFolderWithTheRunInItsMetadata) {
  const std::string out = dir_ + "/scratch";
  const CommandResult result = run(scratch_args(out) + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json report = nlohmann::json::parse(result.out);  // exactly one object
  EXPECT_EQ(report["steps"], 40);
  EXPECT_EQ(report["output"], out);
  EXPECT_EQ(report["seq"], 32);
  EXPECT_EQ(report["data_sha256"], sha256_of(training_text()));
  // From ln(258) ≈ 5.55 nats at random init, 40 steps learn at least the byte statistics.
  EXPECT_LT(report["final_loss"].get<double>(), 3.5);
  EXPECT_LT(report["heldout_nll"].get<double>(), 3.5);
  EXPECT_GT(report["heldout_tokens"].get<int64_t>(), 0);
  EXPECT_GT(report["tokens_per_second"].get<double>(), 0);
  EXPECT_GT(report["seconds"].get<double>(), 0);
  // Periodic evaluations every steps/10 = 4 steps, then the final one.
  EXPECT_EQ(report["evals"].size(), 10u);
  EXPECT_EQ(report["evals"].back()["heldout_nll"], report["heldout_nll"]);

  EXPECT_EQ(read_file(out + "/tokenizer.json"), byte_tokenizer_json());
  const Checkpoint checkpoint(out);
  EXPECT_EQ(checkpoint.config().hidden_size, 32);
  EXPECT_EQ(checkpoint.config().bos_token_id, kByteBosId);
  for (const NamedTensor& tensor : checkpoint.tensors()) EXPECT_EQ(tensor.view.dtype, DType::F32);
  const auto& metadata = checkpoint.metadata();
  EXPECT_EQ(metadata.at("train.steps"), "40");
  EXPECT_EQ(metadata.at("train.batch"), "4");
  EXPECT_EQ(metadata.at("train.seq"), "32");
  EXPECT_EQ(metadata.at("train.lr"), "0.003");
  EXPECT_EQ(metadata.at("train.data_sha256"), sha256_of(training_text()));
  EXPECT_NEAR(std::stod(metadata.at("train.final_loss")), report["final_loss"].get<double>(), 1e-6);
  EXPECT_NEAR(std::stod(metadata.at("train.heldout_nll")), report["heldout_nll"].get<double>(),
              1e-6);
  EXPECT_EQ(metadata.at("train.source"), "config " + config_);
  for (const auto& entry : fs::directory_iterator(dir_))  // no temp folder left behind
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos);
}

TEST_F(CliTrain, SameSeedSameModel) {
  ASSERT_EQ(run(scratch_args(dir_ + "/a") + " --seed 3 --json").exit_code, 0);
  ASSERT_EQ(run(scratch_args(dir_ + "/b") + " --seed 3 --json").exit_code, 0);
  ASSERT_EQ(run(scratch_args(dir_ + "/c") + " --seed 4 --json").exit_code, 0);
  EXPECT_EQ(Checkpoint(dir_ + "/a").fingerprint(), Checkpoint(dir_ + "/b").fingerprint());
  EXPECT_NE(Checkpoint(dir_ + "/a").fingerprint(), Checkpoint(dir_ + "/c").fingerprint());
}

// The trainer's held-out NLL (training forward, windows of seq + 1 tokens) equals what
// `bitdelta eval --context seq+1` computes on the same file with its own (KV-cache) forward.
TEST_F(CliTrain, HeldoutNllAgreesWithBitdeltaEval) {
  const std::string heldout = scratch_.write("heldout.txt",
                                             "the lazy fox and the quick dog saved nine.\n"
                                             "all that glitters is gold, said the bird.\n");
  const std::string out = dir_ + "/model";
  const CommandResult trained = run(scratch_args(out) + " --heldout " + heldout + " --json");
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  const nlohmann::json report = nlohmann::json::parse(trained.out);
  const CommandResult evaluated =
      run("eval --model " + out + " --data " + heldout + " --context 33 --json");
  ASSERT_EQ(evaluated.exit_code, 0) << evaluated.err;
  const nlohmann::json eval = nlohmann::json::parse(evaluated.out);
  EXPECT_EQ(report["heldout_tokens"], eval["tokens"]);
  const double ours = report["heldout_nll"], theirs = eval["nll"];
  std::printf("held-out nll: train %.7f, eval %.7f (rel %.2e)\n", ours, theirs,
              std::abs(ours - theirs) / theirs);
  EXPECT_NEAR(ours, theirs, 1e-5 * theirs);
  EXPECT_EQ(Checkpoint(out).metadata().at("train.heldout_sha256"), sha256_of(read_file(heldout)));
}

TEST_F(CliTrain, FineTunesAModelFolderAndKeepsItsTokenizer) {
  const std::string base = dir_ + "/base";
  ASSERT_EQ(run(scratch_args(base) + " --json").exit_code, 0);
  // A tokenizer.json whose bytes differ from the byte tokenizer's text but mean the same:
  // the fine-tune must copy the file as it is.
  const std::string tokenizer = read_file(base + "/tokenizer.json") + "\n";
  scratch_.write("base/tokenizer.json", tokenizer);
  const std::string tuned = dir_ + "/tuned";
  const CommandResult result = run("train --model " + base + " --data " + data_ + " -o " + tuned +
                                   " --steps 10 --batch 4 --seq 32 --threads 1 --json");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(read_file(tuned + "/tokenizer.json"), tokenizer);
  const Checkpoint source(base), output(tuned);
  EXPECT_EQ(output.metadata().at("train.source"), "model " + base);
  EXPECT_EQ(output.metadata().at("train.source_fingerprint"), source.fingerprint());
  EXPECT_EQ(std::stod(output.metadata().at("train.lr")), 3e-4);  // the fine-tuning defaults
  EXPECT_EQ(output.metadata().at("train.weight_decay"), "0");
  EXPECT_EQ(output.metadata().at("train.freeze_embeddings"), "false");
  EXPECT_NE(output.fingerprint(), source.fingerprint());
}

// --freeze-embeddings: the (tied) embedding comes out byte for byte as it went in, everything
// else still trains.
TEST_F(CliTrain, FreezeEmbeddingsLeavesTheEmbeddingUntouched) {
  const std::string base = dir_ + "/base", tuned = dir_ + "/tuned";
  ASSERT_EQ(run(scratch_args(base) + " --json").exit_code, 0);
  const CommandResult result =
      run("train --model " + base + " --data " + data_ + " -o " + tuned +
          " --steps 10 --batch 4 --seq 32 --lr 1e-3 --threads 1" + " --freeze-embeddings --json");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const Checkpoint source(base), output(tuned);
  EXPECT_EQ(output.metadata().at("train.freeze_embeddings"), "true");
  for (const NamedTensor& tensor : source.tensors()) {
    const TensorView* after = output.find(tensor.name);
    ASSERT_NE(after, nullptr) << tensor.name;
    ASSERT_EQ(after->bytes(), tensor.view.bytes());
    const bool same = std::memcmp(after->data, tensor.view.data, after->bytes()) == 0;
    EXPECT_EQ(same, tensor.name == "model.embed_tokens.weight") << tensor.name;
  }
}

TEST_F(CliTrain, RefusesAnExistingOutputUnlessForced) {
  const std::string out = dir_ + "/out";
  fs::create_directory(out);
  scratch_.write("out/keep.txt", "mine");
  const CommandResult refused = run(scratch_args(out));
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("already exists"), std::string::npos) << refused.err;
  EXPECT_EQ(read_file(out + "/keep.txt"), "mine");
  const CommandResult forced = run(scratch_args(out) + " --force --json");
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_FALSE(fs::exists(out + "/keep.txt"));  // replaced as a whole
  EXPECT_NO_THROW(Checkpoint{out});
}

TEST_F(CliTrain, RefusesToOverwriteTheModelItFineTunes) {
  const std::string base = dir_ + "/base";
  ASSERT_EQ(run(scratch_args(base) + " --json").exit_code, 0);
  const std::string before = Checkpoint(base).fingerprint();
  const CommandResult result = run("train --model " + base + " --data " + data_ + " -o " + base +
                                   " --force --steps 2 --batch 2 --seq 16");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.err.find("is the model being fine-tuned"), std::string::npos) << result.err;
  EXPECT_EQ(Checkpoint(base).fingerprint(), before);
}

// Each bad input: exit 1 (bad input) or 2 (bad usage), one line on stderr naming the problem,
// no output folder.
TEST_F(CliTrain, BadInputsFailWithOneLineAndWriteNothing) {
  scratch_.write("empty.txt", "");
  scratch_.write("short.txt", "tiny text");
  const std::string out = dir_ + "/never";
  const std::string base = "train --config " + config_ + " -o " + out + " --batch 2 --seq 32";
  const struct {
    std::string arguments;
    int exit_code;  // 1: bad input, 2: bad usage
    std::string message;
  } cases[] = {
      {base + " --data " + dir_ + "/missing.txt", 1, "missing.txt"},
      {base + " --data " + dir_ + "/empty.txt", 1, "empty.txt: the data file is empty"},
      {base + " --data " + dir_ + "/short.txt", 1, "short.txt: too short"},
      {base + " --data " + data_ + " --steps abc", 2, "--steps expects an integer"},
      {base + " --data " + data_ + " --steps 0", 2, "--steps must be at least 1"},
      {base + " --data " + data_ + " --lr -1", 2, "--lr must be a positive number"},
      {base + " --data " + data_ + " --batch 0", 2, "--batch must be at least 1"},
      {base + " --data " + data_ + " --seq 65", 2, "exceeds the model's max_position_embeddings"},
      {base + " --data " + data_ + " --warmup 500", 2, "--warmup must lie in"},
      {base + " --data " + data_ + " --heldout-fraction 1", 2, "--heldout-fraction must lie in"},
      {base + " --data " + data_ + " --clip nan", 2, "--clip must be a number"},
      {base + " --data " + data_ + " --heldout " + dir_ + "/empty.txt", 1, "empty.txt"},
      {base + " --data " + data_ + " --model " + dir_, 2, "at most one of --model"},
      {"train --config " + data_ + " --data " + data_ + " -o " + out, 1, "train.txt"},
      {"train --config " + config_ + " --data " + data_, 2, "-o is required"},
      {base + " --data " + data_ + " --bogus 1", 2, "unknown option --bogus"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.arguments);
    test::expect_refusal(run(c.arguments), c.exit_code, {c.message});
    EXPECT_FALSE(fs::exists(out));
  }
}

TEST_F(CliTrain, HelpListsTheOptions) {
  const CommandResult result = run("train --help");
  EXPECT_EQ(result.exit_code, 0);
  for (const char* option : {"--model", "--config", "--data", "-o", "--steps", "--lr", "--batch",
                             "--seq", "--json", "--force", "--heldout"})
    EXPECT_NE(result.out.find(option), std::string::npos) << option;
}

}  // namespace
}  // namespace bd
