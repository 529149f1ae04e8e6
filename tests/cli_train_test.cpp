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
#include "io/adapter.h"
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

// ---- DP-SGD (--dp) -----------------------------------------------------------------------------

const std::string kUser = "did:lux:1:0x1111111111111111111111111111111111111111";

// The private run: --batch 4 is the expected batch, the target ε gives σ.
std::string private_args(const std::string& ledger) {
  return " --dp --target-epsilon 4 --delta 1e-5 --max-grad-norm 1 --user " + kUser + " --ledger " +
         ledger;
}

TEST_F(CliTrain, PrivateRunRecordsItsGuaranteeAndSpendsTheUsersBudget) {
  const std::string out = dir_ + "/private", ledger = dir_ + "/ledger.sqlite";
  const CommandResult result =
      run(scratch_args(out) + private_args(ledger) + " --dp-seed 5 --json");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json report = nlohmann::json::parse(result.out);
  const nlohmann::json& privacy = report["privacy"];
  // The examples are the disjoint windows of 33 tokens of the training part.
  const int64_t windows = report["train_tokens"].get<int64_t>() / 33;
  EXPECT_EQ(privacy["windows"], windows);
  EXPECT_DOUBLE_EQ(privacy["sample_rate"].get<double>(), 4.0 / double(windows));
  EXPECT_EQ(privacy["physical_batch"], 4);
  // Opacus's search stops within 0.01 below the target.
  const double epsilon = privacy["epsilon"].get<double>();
  EXPECT_LE(epsilon, 4.0);
  EXPECT_GT(epsilon, 3.99);
  EXPECT_FALSE(privacy["secret_randomness"].get<bool>());
  EXPECT_TRUE(std::isfinite(report["final_loss"].get<double>()));

  // The accountant on its own gives the same ε for the recorded (q, σ, T).
  const CommandResult accountant = run(cat(
      "privacy epsilon --json --delta 1e-5 --steps 40 --sample-rate ",
      privacy["sample_rate"].dump(), " --noise-multiplier ", privacy["noise_multiplier"].dump()));
  ASSERT_EQ(accountant.exit_code, 0) << accountant.err;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(accountant.out)["epsilon"].get<double>(), epsilon);

  const Checkpoint checkpoint(out);
  const auto& metadata = checkpoint.metadata();
  EXPECT_DOUBLE_EQ(std::stod(metadata.at("privacy.epsilon")), epsilon);
  EXPECT_EQ(metadata.at("privacy.delta"), "1e-05");
  EXPECT_EQ(metadata.at("privacy.steps"), "40");
  EXPECT_EQ(metadata.at("privacy.max_grad_norm"), "1");
  EXPECT_EQ(metadata.at("privacy.user"), kUser);
  EXPECT_EQ(metadata.at("privacy.examples"), std::to_string(windows));
  EXPECT_NE(metadata.at("privacy.randomness").find("--dp-seed 5"), std::string::npos);
  EXPECT_EQ(metadata.count("train.clip"), 0u);

  // The ledger holds the run, completed, and the user's total is its ε.
  const CommandResult spent = run("privacy ledger --runs --json --ledger " + ledger);
  ASSERT_EQ(spent.exit_code, 0) << spent.err;
  const nlohmann::json budget = nlohmann::json::parse(spent.out);
  ASSERT_EQ(budget["users"].size(), 1u);
  EXPECT_EQ(budget["users"][0]["user"], kUser);
  EXPECT_NEAR(budget["users"][0]["epsilon"].get<double>(), epsilon, 1e-9);
  EXPECT_NE(spent.out.find("completed"), std::string::npos) << spent.out;

  // Same seed, same model; secret randomness by default, recorded as such.
  ASSERT_EQ(run(scratch_args(dir_ + "/again") + private_args(dir_ + "/l2") + " --dp-seed 5 --json")
                .exit_code,
            0);
  EXPECT_EQ(Checkpoint(out).fingerprint(), Checkpoint(dir_ + "/again").fingerprint());
  const CommandResult secret = run(scratch_args(dir_ + "/secret") + private_args(dir_ + "/l3"));
  ASSERT_EQ(secret.exit_code, 0) << secret.err;
  EXPECT_NE(secret.out.find("privacy: epsilon"), std::string::npos) << secret.out;
  EXPECT_EQ(Checkpoint(dir_ + "/secret").metadata().at("privacy.randomness").find("secret"), 0u);
}

// A private fine-tune of a model folder; compress copies its privacy.* record into the adapter,
// which is what an attestation binds.
TEST_F(CliTrain, PrivateFineTuneCarriesItsGuaranteeIntoTheAdapter) {
  const std::string base = dir_ + "/base", tuned = dir_ + "/tuned", adapter = dir_ + "/a.bitdelta";
  ASSERT_EQ(run(scratch_args(base) + " --json").exit_code, 0);
  const CommandResult train = run("train --model " + base + " --data " + data_ + " -o " + tuned +
                                  " --steps 5 --batch 4 --seq 32 --threads 1" +
                                  private_args(dir_ + "/ledger.sqlite") + " --json");
  ASSERT_EQ(train.exit_code, 0) << train.err;
  const CommandResult compress =
      run("compress --base " + base + " --finetuned " + tuned + " -o " + adapter + " --json");
  ASSERT_EQ(compress.exit_code, 0) << compress.err;
  const Checkpoint checkpoint(tuned);
  nlohmann::json expected = nlohmann::json::object();
  for (const auto& [key, value] : checkpoint.metadata())
    if (key.rfind("privacy.", 0) == 0) expected[key] = value;
  EXPECT_GE(expected.size(), 14u);
  EXPECT_EQ(nlohmann::json::parse(AdapterFile(adapter).info().privacy), expected);
  EXPECT_DOUBLE_EQ(std::stod(expected["privacy.epsilon"].get<std::string>()),
                   nlohmann::json::parse(train.out)["privacy"]["epsilon"].get<double>());
}

// The cap applies to the user's total over all runs, before any training: a refused run writes
// no model and leaves the ledger as it was.
TEST_F(CliTrain, PrivateRunPastTheUsersCapIsRefusedBeforeTraining) {
  const std::string ledger = dir_ + "/ledger.sqlite";
  const std::string capped = private_args(ledger) + " --max-epsilon 5 --dp-seed 1 --json";
  ASSERT_EQ(run(scratch_args(dir_ + "/first") + capped).exit_code, 0);
  const std::string out = dir_ + "/second";
  test::expect_refusal(run(scratch_args(out) + capped), 1, {kUser, "above the cap of 5"});
  EXPECT_FALSE(fs::exists(out));
  const CommandResult spent = run("privacy ledger --runs --json --ledger " + ledger);
  EXPECT_EQ(nlohmann::json::parse(spent.out)["users"][0]["runs"], 1);
  // Another user has their own budget.
  const std::string other = "did:lux:1:0x2222222222222222222222222222222222222222";
  ASSERT_EQ(run(scratch_args(out) + private_args(ledger) + " --max-epsilon 5 --dp-seed 1 --user " +
                other + " --json")
                .exit_code,
            0);
}

TEST_F(CliTrain, PrivateOptionsAreChecked) {
  const std::string out = dir_ + "/never", ledger = dir_ + "/ledger.sqlite";
  const std::string base = scratch_args(out);
  const std::string dp =
      " --dp --delta 1e-5 --max-grad-norm 1 --user " + kUser + " --ledger " + ledger;
  const struct {
    std::string arguments;
    std::string message;
  } cases[] = {
      {base + " --noise-multiplier 1", "--noise-multiplier applies only with --dp"},
      {base + " --user " + kUser, "--user applies only with --dp"},
      {base + dp, "exactly one of --noise-multiplier SIGMA or --target-epsilon EPS"},
      {base + dp + " --noise-multiplier 1 --target-epsilon 3", "exactly one of"},
      {base + dp + " --noise-multiplier 1 --clip 1", "with --dp use --max-grad-norm"},
      {base + dp + " --noise-multiplier 1 --sample-rate 0.1", "at most one of --sample-rate"},
      {base + dp + " --noise-multiplier -1", "--noise-multiplier must be a number >= 0"},
      {base + dp + " --noise-multiplier 1 --delta 1", "--delta must lie in (0, 1)"},
      {base + dp + " --noise-multiplier 1 --max-grad-norm 0", "--max-grad-norm must be a positive"},
      {base + dp + " --noise-multiplier 1 --user did:lux:1:0x12", "--user: "},
      {base + dp + " --noise-multiplier 1 --batch 100000", "exceeds the"},
      {scratch_args(out) + " --dp --noise-multiplier 1 --max-grad-norm 1 --user " + kUser,
       "--dp needs --delta"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.arguments);
    test::expect_refusal(run(c.arguments), 2, {c.message});
    EXPECT_FALSE(fs::exists(out));
    EXPECT_FALSE(fs::exists(ledger));
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
