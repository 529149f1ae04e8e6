// The data pipeline: file → tokens, the deterministic split, seeded random windows, and the
// consecutive evaluation windows.
#include <gtest/gtest.h>

#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_util.h"
#include "train/data.h"

namespace bd {
namespace {

using test::error_of;

// A byte-level encoder: token id = byte value.
std::vector<int32_t> encode_bytes(std::string_view text) {
  return std::vector<int32_t>(text.begin(), text.end());
}

std::vector<int32_t> iota_tokens(int32_t n) {
  std::vector<int32_t> tokens(n);
  std::iota(tokens.begin(), tokens.end(), 0);
  return tokens;
}

class DataFile : public ::testing::Test {
 protected:
  test::ScratchDir scratch_;
};

TEST(SplitTokens, HoldsOutTheTail) {
  TokenData data;
  split_tokens(iota_tokens(10), 0.2, &data);
  EXPECT_EQ(data.train, iota_tokens(8));
  EXPECT_EQ(data.heldout, (std::vector<int32_t>{8, 9}));
  split_tokens(iota_tokens(10), 0.0, &data);
  EXPECT_EQ(data.train.size(), 10u);
  EXPECT_TRUE(data.heldout.empty());
  EXPECT_THROW(split_tokens(iota_tokens(10), 1.0, &data), Error);
  EXPECT_THROW(split_tokens(iota_tokens(10), -0.1, &data), Error);
}

TEST_F(DataFile, LoadsEncodesSplitsAndHashes) {
  const std::string path = scratch_.write("abc.txt", "abcdefghij");
  const TokenData data = load_token_data(path, encode_bytes, 0.2, 4);
  EXPECT_EQ(data.train, encode_bytes("abcdefgh"));
  EXPECT_EQ(data.heldout, encode_bytes("ij"));
  EXPECT_EQ(data.file_bytes, 10);
  // sha256("abcdefghij"), from coreutils' sha256sum.
  EXPECT_EQ(data.file_sha256, "72399361da6a7754fec986dca5b7cbaf1c810a28ded4abaf56b2106d06cb78b0");
}

TEST_F(DataFile, RejectsMissingEmptyAndShortFilesNamingThem) {
  EXPECT_NE(error_of([&] {
              load_token_data(scratch_ / "none.txt", encode_bytes, 0.1, 4);
            }).find("none.txt"),
            std::string::npos);
  const std::string empty = scratch_.write("empty.txt", "");
  EXPECT_NE(error_of([&] {
              load_token_data(empty, encode_bytes, 0.1, 4);
            }).find("empty.txt: the data file is empty"),
            std::string::npos);
  const std::string short_file = scratch_.write("short.txt", "abcd");
  EXPECT_NE(error_of([&] {
              load_token_data(short_file, encode_bytes, 0.0, 4);
            }).find("short.txt: too short"),
            std::string::npos);
  EXPECT_NO_THROW(load_token_data(short_file, encode_bytes, 0.0, 3));
  // 20 bytes, 5% held out = 1 token: too little to predict anything.
  const std::string tiny_heldout = scratch_.write("tiny.txt", std::string(20, 'x'));
  EXPECT_NE(
      error_of([&] { load_token_data(tiny_heldout, encode_bytes, 0.05, 4); }).find("held-out"),
      std::string::npos);
}

TEST(BatchSampler, DrawsContiguousWindowsWithShiftedTargets) {
  const std::vector<int32_t> tokens = iota_tokens(50);
  BatchSampler sampler(tokens, 3, 8, 1);
  for (int draw = 0; draw < 20; ++draw) {
    const Batch batch = sampler.next();
    ASSERT_EQ(batch.batch, 3);
    ASSERT_EQ(batch.seq, 8);
    ASSERT_EQ(batch.inputs.size(), 24u);
    for (int64_t b = 0; b < 3; ++b) {
      const int32_t start = batch.inputs[b * 8];
      EXPECT_LE(start, 50 - 9);
      for (int64_t t = 0; t < 8; ++t) {
        EXPECT_EQ(batch.inputs[b * 8 + t], start + t);
        EXPECT_EQ(batch.targets[b * 8 + t], start + t + 1);
      }
    }
  }
}

TEST(BatchSampler, SameSeedSameBatchesAndEveryOffsetReachable) {
  const std::vector<int32_t> tokens = iota_tokens(20);
  BatchSampler first(tokens, 4, 5, 42), second(tokens, 4, 5, 42), other(tokens, 4, 5, 43);
  std::set<int32_t> starts;
  bool differs = false;
  for (int draw = 0; draw < 200; ++draw) {
    const Batch a = first.next(), b = second.next(), c = other.next();
    EXPECT_EQ(a.inputs, b.inputs);
    differs |= a.inputs != c.inputs;
    for (int64_t w = 0; w < 4; ++w) starts.insert(a.inputs[w * 5]);
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(starts.size(), 15u);  // offsets 0 ... 20 - 6
  EXPECT_EQ(*starts.rbegin(), 14);
}

TEST(BatchSampler, RejectsStreamsShorterThanAWindow) {
  const std::vector<int32_t> tokens = iota_tokens(8);
  EXPECT_THROW(BatchSampler(tokens, 1, 8, 0), Error);
  EXPECT_NO_THROW(BatchSampler(tokens, 1, 7, 0));
  EXPECT_THROW(BatchSampler(tokens, 0, 4, 0), Error);
}

// A fair draw: 60000 values below 6 land 10000 ± 5σ (σ ≈ 91) in each bin.
TEST(UniformBelow, IsUnbiased) {
  std::mt19937_64 rng(3);
  std::vector<int> counts(6, 0);
  for (int i = 0; i < 60000; ++i) ++counts[uniform_below(rng, 6)];
  for (int count : counts) EXPECT_NEAR(count, 10000, 460);
  EXPECT_EQ(uniform_below(rng, 1), 0u);
}

// 11 tokens, seq 3: windows [0..3] and [4..7] (one batch of 2), then the short window [8..10]
// predicting 2 tokens — 3 + 3 + 2 = 8 predicted tokens, all but each window's first.
TEST(EvalBatches, CutsConsecutiveWindowsAndKeepsTheShortTail) {
  const std::vector<Batch> batches = eval_batches(iota_tokens(11), 2, 3);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].batch, 2);
  EXPECT_EQ(batches[0].seq, 3);
  EXPECT_EQ(batches[0].inputs, (std::vector<int32_t>{0, 1, 2, 4, 5, 6}));
  EXPECT_EQ(batches[0].targets, (std::vector<int32_t>{1, 2, 3, 5, 6, 7}));
  EXPECT_EQ(batches[1].batch, 1);
  EXPECT_EQ(batches[1].seq, 2);
  EXPECT_EQ(batches[1].inputs, (std::vector<int32_t>{8, 9}));
  EXPECT_EQ(batches[1].targets, (std::vector<int32_t>{9, 10}));
}

TEST(EvalBatches, GroupsFullWindowsAndDropsALoneLastToken) {
  const std::vector<Batch> exact = eval_batches(iota_tokens(12), 2, 3);
  ASSERT_EQ(exact.size(), 2u);
  EXPECT_EQ(exact[1].batch, 1);
  EXPECT_EQ(exact[1].seq, 3);
  EXPECT_EQ(exact[1].inputs, (std::vector<int32_t>{8, 9, 10}));
  const std::vector<Batch> lone = eval_batches(iota_tokens(9), 4, 3);
  ASSERT_EQ(lone.size(), 1u);
  EXPECT_EQ(lone[0].batch, 2);
  EXPECT_TRUE(eval_batches(iota_tokens(1), 4, 3).empty());
}

}  // namespace
}  // namespace bd
