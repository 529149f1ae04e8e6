// `bitdelta soup` end to end: three real fine-tunes of one base compressed with `bitdelta
// compress`, souped from the command line, the soup used by `eval --delta`; and its refusals.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "checkpoint_pair.h"
#include "core/mapped_file.h"
#include "io/adapter.h"
#include "test_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class CliSoup : public ::testing::Test {
 protected:
  void SetUp() override {
    LlamaParams base(test::small_llama_config());
    base.init_random(1);
    test::save_params(scratch_ / "base", base, DType::F32, {});
    for (int k = 0; k < 3; ++k) {
      LlamaParams tuned = base;
      std::mt19937_64 rng(100 + k);
      std::normal_distribution<float> noise(0.0f, 0.004f);
      for (const ParamSlice& slice : tuned.slices())
        if (test::is_block_linear(slice.name) || slice.name == "model.norm.weight")
          for (size_t i = 0; i < slice.numel; ++i) tuned.data()[slice.offset + i] += noise(rng);
      const std::string name = "user" + std::to_string(k);
      // Their DP records: epsilon 1, 5, 9.
      test::save_params(
          scratch_ / name, tuned, DType::F32,
          {{"privacy.epsilon", std::to_string(4 * k + 1)}, {"privacy.delta", "1e-05"}});
      const test::CommandResult compressed =
          run("compress --base " + scratch_ / "base" + " --finetuned " + scratch_ / name + " -o " +
              scratch_ / (name + ".bitdelta") + " --owner did:lux:" + name + " --json");
      EXPECT_EQ(compressed.exit_code, 0) << compressed.err;
      adapters_ += " " + scratch_ / (name + ".bitdelta");
    }
  }
  test::CommandResult run(const std::string& arguments) const {
    return test::run_bitdelta(arguments, scratch_);
  }

  test::ScratchDir scratch_;
  std::string adapters_;
};

// `mpirun -np 2 bitdelta soup` (docs/deltasoup.md): each rank aggregates and writes its share of
// the tensors into one file, byte-identical to one process's, for coordinate, sign and vector
// rules, bit and dense output, per-matrix and per-row scales.
TEST_F(CliSoup, TwoMpiRanksWriteTheSameBytesAsOneProcess) {
#ifndef BITDELTA_MPI
  GTEST_SKIP() << "built without Open MPI (scripts/install-deps.sh --test installs it)";
#endif
  const std::string mpirun =
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 --oversubscribe "
      "--bind-to none " +
      test::shell_quote(BITDELTA_BINARY);
  for (const std::string method :
       {"median --granularity row", "krum --byzantine 0", "sign-majority",
        "geometric-median --output dense", "trimmed-mean --trim 0.34 --output dense"}) {
    SCOPED_TRACE(method);
    const std::string arguments = "soup --base " + scratch_ / "base" + " --deltas" + adapters_ +
                                  " --method " + method + " --force --json -o ";
    const test::CommandResult one = run(arguments + scratch_ / "one.bitdelta");
    ASSERT_EQ(one.exit_code, 0) << one.err;
    const test::CommandResult two =
        test::run_command(mpirun + " " + arguments + scratch_ / "two.bitdelta", scratch_);
    ASSERT_EQ(two.exit_code, 0) << two.err;
    EXPECT_EQ(json::parse(two.out)["version"], json::parse(one.out)["version"]);  // rank 0 only
    EXPECT_EQ(read_file(scratch_ / "two.bitdelta"), read_file(scratch_ / "one.bitdelta"));
    EXPECT_FALSE(fs::exists(scratch_ / "two.bitdelta.partial"));
  }
}

TEST_F(CliSoup, SoupsThreeFineTunesAndTheSoupServesAsAnAdapter) {
  const std::string out = scratch_ / "soup.bitdelta";
  const test::CommandResult result = run("soup --base " + scratch_ / "base" + " --deltas" +
                                         adapters_ + " -o " + out + " --method median --json");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const json report = json::parse(result.out);
  EXPECT_EQ(report["method"], "median");
  ASSERT_EQ(report["contributions"].size(), 3u);
  EXPECT_EQ(report["version"], adapter_fingerprint(out));
  const AdapterFile soup(out);
  EXPECT_EQ(soup.info().extra.at("soup.method"), "median");
  EXPECT_EQ(soup.matrices().size(), 14u);  // every block linear, as signs and a scale
  EXPECT_EQ(json::parse(soup.info().extra.at("soup.inputs")).size(), 3u);

  // The same soup when the inputs come in another order, each after its own --deltas.
  const std::string again = scratch_ / "again.bitdelta";
  std::string reversed;
  for (int k = 2; k >= 0; --k)
    reversed += " --deltas " + scratch_ / ("user" + std::to_string(k) + ".bitdelta");
  ASSERT_EQ(run("soup --base " + scratch_ / "base" + reversed + " -o " + again +
                " --method median --json")
                .exit_code,
            0);
  EXPECT_EQ(read_file(out), read_file(again));

  // Krum with f = 0 keeps one contribution and says why the others were left out.
  const test::CommandResult krum =
      run("soup --base " + scratch_ / "base" + " --deltas" + adapters_ + " -o " +
          scratch_ / "krum.bitdelta" + " --method krum --byzantine 0 --json");
  ASSERT_EQ(krum.exit_code, 0) << krum.err;
  int excluded = 0;
  const json krum_report = json::parse(krum.out);
  for (const json& c : krum_report["contributions"])
    excluded += c.contains("excluded") &&
                c["excluded"].get<std::string>().find("Krum score") != std::string::npos;
  EXPECT_EQ(excluded, 2) << krum.out;

  const test::CommandResult eval =
      run("eval --model " + scratch_ / "base" + " --delta " + out + " --tokens " +
          scratch_.write("ids.txt", "1 2 3 4 5 6 7 8") + " --json");
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  EXPECT_TRUE(std::isfinite(json::parse(eval.out)["nll"].get<double>()));
}

// Admission: only attested adapters (user2's attestation is signed by a key nobody trusts), only
// epsilon <= 6 (user2 recorded 9); each exclusion is listed with its reason.
TEST_F(CliSoup, AdmissionFiltersExcludeWithReasons) {
  const std::string trusted_key = scratch_ / "trusted.key", other_key = scratch_ / "other.key";
  const test::CommandResult keygen = run("attest keygen -o " + trusted_key);
  ASSERT_EQ(keygen.exit_code, 0) << keygen.err;
  const std::string trusted = scratch_.write("trusted.txt", keygen.out);
  ASSERT_EQ(run("attest keygen -o " + other_key).exit_code, 0);
  const std::string measurement(64, '0');
  for (int k = 0; k < 3; ++k) {
    const std::string adapter = scratch_ / ("user" + std::to_string(k) + ".bitdelta");
    const test::CommandResult signed_ =
        run("attest sign --key " + (k < 2 ? trusted_key : other_key) + " --adapter " + adapter +
            " --measurement " + measurement + " -o " + scratch_ / ("user" + std::to_string(k)) +
            ".attestation.json");
    ASSERT_EQ(signed_.exit_code, 0) << signed_.err;
  }
  const std::string soup =
      "soup --base " + scratch_ / "base" + " --deltas" + adapters_ + " --method mean --json -o ";
  auto excluded_of = [](const json& report) {
    std::map<std::string, std::string> excluded;
    for (const json& c : report["contributions"])
      if (c.contains("excluded"))
        excluded[c["owner"].get<std::string>()] = c["excluded"].get<std::string>();
    return excluded;
  };
  const test::CommandResult attested =
      run(soup + scratch_ / "a.bitdelta" + " --require-attestation --trusted-keys " + trusted);
  ASSERT_EQ(attested.exit_code, 0) << attested.err;
  auto excluded = excluded_of(json::parse(attested.out));
  ASSERT_EQ(excluded.size(), 1u);
  EXPECT_NE(excluded["did:lux:user2"].find("attestation does not verify"), std::string::npos);
  const json recorded =
      json::parse(AdapterFile(scratch_ / "a.bitdelta").info().extra.at("soup.excluded"));
  ASSERT_EQ(recorded.size(), 1u);
  EXPECT_EQ(recorded[0]["owner"], "did:lux:user2");

  const test::CommandResult private_only = run(soup + scratch_ / "e.bitdelta" + " --max-epsilon 6");
  ASSERT_EQ(private_only.exit_code, 0) << private_only.err;
  excluded = excluded_of(json::parse(private_only.out));
  ASSERT_EQ(excluded.size(), 1u);
  EXPECT_NE(excluded["did:lux:user2"].find("epsilon 9 exceeds --max-epsilon 6"), std::string::npos);

  // Without its attestation file an adapter is excluded too; a missing key file is an error.
  fs::remove(scratch_ / "user0.attestation.json");
  excluded = excluded_of(json::parse(
      run(soup + scratch_ / "b.bitdelta" + " --require-attestation --trusted-keys " + trusted)
          .out));
  EXPECT_NE(excluded["did:lux:user0"].find("no attestation at"), std::string::npos);
  test::expect_refusal(run(soup + scratch_ / "c.bitdelta" + " --require-attestation"), 2,
                       {"--require-attestation needs --trusted-keys FILE"});
}

TEST_F(CliSoup, ScreenReportsEveryAdapter) {
  const test::CommandResult result = run("screen --deltas" + adapters_ + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const json report = json::parse(result.out);
  ASSERT_EQ(report["contributions"].size(), 3u);
  for (const json& c : report["contributions"]) {
    EXPECT_GT(c["norm"].get<double>(), 0);
    EXPECT_GT(c["cosine"].get<double>(), 0);  // fine-tunes of one base, each a noisy delta
    EXPECT_EQ(c["flagged"], !c["reasons"].empty());
  }
  test::expect_refusal(run("screen --deltas " + scratch_ / "user0.bitdelta"), 2,
                       {"at least 3 adapters"});
}

// Greedy soups and attribution score candidate soups on held-out text: the base's own training
// text style, written here.
TEST_F(CliSoup, GreedySoupsAndAttributionRecordTheirSteps) {
  std::string text;
  for (int i = 0; i < 40; ++i)
    text += "the quick brown fox jumps over the lazy dog " + std::to_string(i) + ".\n";
  const std::string heldout = scratch_.write("heldout.txt", text);
  const std::string soup = "soup --base " + scratch_ / "base" + " --deltas" + adapters_ +
                           " --eval " + heldout + " --threads 1 --json -o ";
  for (const char* mode : {"average", "additive"}) {
    SCOPED_TRACE(mode);
    const std::string out = scratch_ / (std::string(mode) + ".bitdelta");
    const test::CommandResult result = run(soup + out + " --greedy " + mode + " --step 0.5");
    ASSERT_EQ(result.exit_code, 0) << result.err;
    const json report = json::parse(result.out);
    const json& greedy = report["greedy"];
    EXPECT_EQ(report["method"], std::string("greedy-") + mode);
    ASSERT_EQ(greedy["steps"].size(), 3u);  // every candidate tried once, best first
    double nll = greedy["base_nll"];
    for (const json& step : greedy["steps"]) {  // accepted exactly when the NLL improved
      EXPECT_EQ(step["accepted"].get<bool>(), step["nll"].get<double>() < nll);
      if (step["accepted"]) nll = step["nll"];
    }
    EXPECT_DOUBLE_EQ(greedy["nll"].get<double>(), nll);
    EXPECT_EQ(json::parse(AdapterFile(out).info().extra.at("soup.greedy"))["weights"],
              greedy["weights"]);
  }
  for (const char* method : {"loo", "shapley"}) {
    SCOPED_TRACE(method);
    const test::CommandResult result =
        run(soup + scratch_ / (std::string(method) + ".bitdelta") +
            " --method mean --attribution " + method + " --permutations 3");
    ASSERT_EQ(result.exit_code, 0) << result.err;
    const json attribution = json::parse(result.out)["attribution"];
    int64_t total = 0;
    for (const json& c : attribution["contributors"]) total += c["basis_points"].get<int64_t>();
    EXPECT_EQ(total, 10000);
    EXPECT_EQ(attribution["contributors"].size(), 3u);
  }
  test::expect_refusal(run(soup + scratch_ / "x.bitdelta" + " --greedy sideways"), 2,
                       {"--greedy must be additive or average"});
  test::expect_refusal(run("soup --base " + scratch_ / "base" + " --deltas" + adapters_ + " -o " +
                           scratch_ / "x.bitdelta --method mean --attribution loo"),
                       2, {"--attribution needs --eval FILE"});
}

TEST_F(CliSoup, Refusals) {
  const std::string base = " --base " + scratch_ / "base";
  const std::string out = scratch_ / "never.bitdelta";
  LlamaParams other(test::small_llama_config());
  other.init_random(2);
  test::save_params(scratch_ / "other", other, DType::F32, {});
  const struct {
    std::string arguments;
    int exit_code;
    std::string message;
  } cases[] = {
      {"soup" + base + " --deltas" + adapters_ + " -o " + out + " --method average", 2,
       "unknown soup method 'average'"},
      {"soup" + base + " --deltas" + adapters_ + " -o " + out + " --method krum --byzantine 1", 2,
       "needs more than 2f + 2 = 4 contributions, got 3"},
      {"soup" + base + " --deltas" + adapters_ + " -o " + out + " --method trimmed-mean --trim 0.5",
       2, "--trim must lie in [0, 0.5)"},
      {"soup" + base + " -o " + out + " --method mean", 2, "--deltas needs at least one adapter"},
      {"soup" + base + " --deltas" + adapters_ + " -o " + out + " --method mean --output sparse", 2,
       "--output must be bit or dense"},
      {"soup --base " + scratch_ / "other" + " --deltas" + adapters_ + " -o " + out +
           " --method mean",
       1, "fingerprint"},
      {"soup" + base + " --deltas" + adapters_ + " " + scratch_ / "missing.bitdelta" + " -o " +
           out + " --method mean",
       1, "missing.bitdelta"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.arguments);
    test::expect_refusal(run(c.arguments), c.exit_code, {c.message});
    EXPECT_FALSE(fs::exists(out));
  }
  const std::string existing = scratch_.write("taken.bitdelta", "mine");
  test::expect_refusal(
      run("soup" + base + " --deltas" + adapters_ + " -o " + existing + " --method mean"), 1,
      {"already exists"});
  EXPECT_EQ(read_file(existing), "mine");
}

}  // namespace
}  // namespace bd
