// The learning-rate schedule against values worked out by hand from its definition.
#include <gtest/gtest.h>

#include "core/error.h"
#include "train/lr_schedule.h"

namespace bd {
namespace {

TEST(LrSchedule, WarmsUpLinearlyFromOneStepIn) {
  const LrSchedule schedule{2.0, 4, 14, 0.1};
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 0.5);
  EXPECT_DOUBLE_EQ(schedule.lr_at(1), 1.0);
  EXPECT_DOUBLE_EQ(schedule.lr_at(3), 2.0);
}

// Peak 1, floor 0.1, 10 decay steps after 4 of warm-up: half-way (step 9) the cosine factor is
// 1/2, so 0.1 + 0.9·0.5 = 0.55; at step 14 and beyond the rate is the floor.
TEST(LrSchedule, DecaysAlongACosineToTheFloor) {
  const LrSchedule schedule{1.0, 4, 14, 0.1};
  EXPECT_DOUBLE_EQ(schedule.lr_at(4), 1.0);
  EXPECT_NEAR(schedule.lr_at(9), 0.55, 1e-15);
  EXPECT_NEAR(schedule.lr_at(14), 0.1, 1e-15);
  EXPECT_NEAR(schedule.lr_at(1000), 0.1, 1e-15);
  for (int64_t step = 4; step < 14; ++step)
    EXPECT_GT(schedule.lr_at(step), schedule.lr_at(step + 1));
}

// No warm-up, 8 steps, floor 0: a quarter of the way (step 2) the factor is (1 + cos(π/4)) / 2.
TEST(LrSchedule, WithoutWarmupStartsAtThePeak) {
  const LrSchedule schedule{3.0, 0, 8, 0.0};
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 3.0);
  EXPECT_NEAR(schedule.lr_at(2), 3.0 * 0.8535533905932737, 1e-14);
  EXPECT_NEAR(schedule.lr_at(4), 1.5, 1e-14);
}

TEST(LrSchedule, ValidateNamesTheBadField) {
  EXPECT_NO_THROW((LrSchedule{1e-3, 10, 100, 0.1}.validate()));
  EXPECT_NO_THROW((LrSchedule{1e-3, 1, 1, 1.0}.validate()));
  auto message = [](const LrSchedule& schedule) {
    try {
      schedule.validate();
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message({0.0, 0, 10, 0.1}).find("learning rate"), std::string::npos);
  EXPECT_NE(message({1e-3, 0, 0, 0.1}).find("steps"), std::string::npos);
  EXPECT_NE(message({1e-3, 11, 10, 0.1}).find("warm-up"), std::string::npos);
  EXPECT_NE(message({1e-3, -1, 10, 0.1}).find("warm-up"), std::string::npos);
  EXPECT_NE(message({1e-3, 0, 10, 1.5}).find("ratio"), std::string::npos);
}

}  // namespace
}  // namespace bd
