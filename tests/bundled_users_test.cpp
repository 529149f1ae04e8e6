// The bundled users end to end on the embedded default model, as a user would run them: a short
// fine-tune on each user's train split (bitdelta train), then bitdelta compress --scale distill.
// Distillation must lower the held-out calibration KL for every bundled user, and the fine-tune
// must already beat the base on the user's held-out text. Short runs (one to four minutes per user
// on two cores) keep this in CI; scripts/bitdelta_quality.py measures the full-length runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<std::string> bundled_users() {
  std::vector<std::string> users;
  for (const auto& entry : fs::directory_iterator(fs::path(BITDELTA_SOURCE_DIR) / "data/users"))
    users.push_back(entry.path().filename().string());
  std::sort(users.begin(), users.end());
  return users;
}

json run_json(const std::string& arguments, const test::ScratchDir& scratch) {
  const test::CommandResult result = test::run_bitdelta(arguments + " --json", scratch);
  EXPECT_EQ(result.exit_code, 0) << arguments << "\n" << result.err;
  return result.exit_code == 0 ? json::parse(result.out) : json::object();
}

TEST(BundledUsers, AtLeastFourDomainsEachWithTrainAndHeldOutText) {
  const std::vector<std::string> users = bundled_users();
  EXPECT_GE(users.size(), 4u);
  for (const std::string& user : users) {
    const fs::path folder = fs::path(BITDELTA_SOURCE_DIR) / "data/users" / user;
    EXPECT_GT(fs::file_size(folder / "train.txt"), 20000u) << user;
    EXPECT_GT(fs::file_size(folder / "heldout.txt"), 2000u) << user;
  }
}

class BundledUser : public ::testing::TestWithParam<std::string> {};

TEST_P(BundledUser, FineTuneBeatsTheBaseAndDistillationLowersTheHeldOutKl) {
  const std::string user = GetParam();
  const std::string data = std::string(BITDELTA_SOURCE_DIR) + "/data/users/" + user;
  test::ScratchDir scratch;
  const std::string tuned = scratch / "tuned", adapter = scratch / "user.bitdelta";
  run_json("train --data " + data + "/train.txt -o " + tuned +
               " --steps 24 --batch 4 --seq 128 --lr 1e-3 --warmup 4 --freeze-embeddings --seed 1",
           scratch);
  const double base = run_json("eval --data " + data + "/heldout.txt", scratch).value("nll", 0.0);
  const double finetune =
      run_json("eval --model " + tuned + " --data " + data + "/heldout.txt", scratch)
          .value("nll", 0.0);
  EXPECT_LT(finetune, base) << user;

  const json report = run_json("compress --base " + std::string(BITDELTA_SOURCE_DIR) +
                                   "/models/default --finetuned " + tuned + " -o " + adapter +
                                   " --scale distill --steps 30",
                               scratch);
  ASSERT_TRUE(report.contains("distill")) << report.dump();
  const double before = report["distill"]["heldout_before"],
               after = report["distill"]["heldout_after"];
  std::printf("%s: held-out NLL base %.4f, fine-tune %.4f; distillation KL %.5f -> %.5f\n",
              user.c_str(), base, finetune, before, after);
  EXPECT_GT(before, 0);
  EXPECT_LT(after, before) << user;
}

INSTANTIATE_TEST_SUITE_P(Users, BundledUser, ::testing::ValuesIn(bundled_users()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

}  // namespace
}  // namespace bd
