// `bitdelta tokenize`: runs the binary on tokenizer folders made in a temp dir.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "model/byte_tokenizer.h"
#include "model/tokenizer_unicode.h"
#include "test_util.h"

namespace bd {
namespace {

using nlohmann::json;
using test::CommandResult;
using test::shell_quote;

class CliTokenize : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(byte_model_);
    scratch_.write("byte/tokenizer.json", byte_tokenizer_json());
  }

  // Runs `bitdelta tokenize` with `words` (each quoted), after an optional environment prefix.
  CommandResult tokenize(const std::vector<std::string>& words, const std::string& env = "") {
    std::string command = env + " " + shell_quote(BITDELTA_BINARY) + " tokenize";
    for (const std::string& word : words) command += " " + shell_quote(word);
    return test::run_command(command, scratch_);
  }

  test::ScratchDir scratch_;
  std::string dir_ = scratch_.path(), byte_model_ = scratch_ / "byte";
};

TEST_F(CliTokenize, EncodesTextAsIdsOnOneLine) {
  const CommandResult run = tokenize({"--model", byte_model_, "--text", "Hi é"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "72 105 32 195 169\n");
  EXPECT_EQ(run.err, "");
}

TEST_F(CliTokenize, JsonAndSpecialTokens) {
  CommandResult run = tokenize({"--model", byte_model_, "--text", "Hi", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(json::parse(run.out), (json{{"ids", {72, 105}}}));
  run = tokenize({"--model", byte_model_, "--text", "Hi", "--add-special", "--json"});
  EXPECT_EQ(json::parse(run.out), (json{{"ids", {256, 72, 105}}}));
  run = tokenize({"--model", byte_model_, "--text", "", "--json"});
  EXPECT_EQ(json::parse(run.out), (json{{"ids", json::array()}}));
}

TEST_F(CliTokenize, FileIsReadByteForByte) {
  const std::string bytes("a\r\n\xff\0b\n", 7);
  scratch_.write("input.bin", bytes);
  const CommandResult run =
      tokenize({"--model", byte_model_, "--file", dir_ + "/input.bin", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::vector<int> expected;
  for (char c : bytes) expected.push_back(uint8_t(c));
  EXPECT_EQ(json::parse(run.out)["ids"], json(expected));
}

TEST_F(CliTokenize, DecodesIdsToExactText) {
  CommandResult run = tokenize({"--model", byte_model_, "--decode", "72 105\n 10"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "Hi\n");
  run = tokenize({"--model", byte_model_, "--decode", "256 72 105 257", "--json"});
  EXPECT_EQ(json::parse(run.out), (json{{"text", "<|bos|>Hi<|eos|>"}}));
  // A lone byte that is not UTF-8: exact on the raw output, U+FFFD inside JSON.
  run = tokenize({"--model", byte_model_, "--decode", "255"});
  EXPECT_EQ(run.out, "\xff");
  run = tokenize({"--model", byte_model_, "--decode", "255", "--json"});
  EXPECT_EQ(json::parse(run.out), (json{{"text", "\xEF\xBF\xBD"}}));
}

TEST_F(CliTokenize, UsesTheDefaultModelWithoutModelOption) {
  std::filesystem::create_directories(dir_ + "/home/models/default");
  scratch_.write("home/models/default/tokenizer.json", byte_tokenizer_json());
  const CommandResult run =
      tokenize({"--text", "A"}, "BITDELTA_HOME=" + shell_quote(dir_ + "/home"));
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "65\n");
}

TEST_F(CliTokenize, MergesOfABpeTokenizer) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[unicode::byte_to_unicode(uint8_t(b))] = b;
  vocab["he"] = 256;
  const json config = {{"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                       {"decoder", {{"type", "ByteLevel"}}},
                       {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"h e"}}}}};
  std::filesystem::create_directories(dir_ + "/bpe");
  scratch_.write("bpe/tokenizer.json", config.dump());
  // Words "hehe" and "Ġhe": h e h e → he he; Ġ h e → Ġ he.
  CommandResult run = tokenize({"--model", dir_ + "/bpe", "--text", "hehe he"});
  EXPECT_EQ(run.out, "256 256 32 256\n") << run.err;
  run = tokenize({"--model", dir_ + "/bpe", "--decode", "256 32 256"});
  EXPECT_EQ(run.out, "he he");
}

TEST_F(CliTokenize, OutOfVocabularyIdIsOneLineErrorExit1) {
  test::expect_refusal(tokenize({"--model", byte_model_, "--decode", "72 300"}), 1,
                       {"token id 300 is not in the vocabulary"});
  EXPECT_EQ(tokenize({"--model", byte_model_, "--decode", "-1"}).exit_code, 1);
  EXPECT_EQ(tokenize({"--model", byte_model_, "--decode", "99999999999"}).exit_code, 1);
}

TEST_F(CliTokenize, BadUsageExits2) {
  EXPECT_EQ(tokenize({"--model", byte_model_, "--decode", "7x"}).exit_code, 2);
  EXPECT_EQ(tokenize({"--model", byte_model_}).exit_code, 2);
  EXPECT_EQ(tokenize({"--model", byte_model_, "--text", "a", "--file", "f"}).exit_code, 2);
  EXPECT_EQ(tokenize({"--model", byte_model_, "--decode", "1", "--add-special"}).exit_code, 2);
  EXPECT_EQ(tokenize({"--model", byte_model_, "--text", "a", "--bogus"}).exit_code, 2);
  const CommandResult help = tokenize({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("usage: bitdelta tokenize"), std::string::npos);
}

TEST_F(CliTokenize, MissingOrBrokenTokenizerNamesTheFile) {
  CommandResult run = tokenize({"--model", dir_ + "/nowhere", "--text", "a"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find(dir_ + "/nowhere/tokenizer.json"), std::string::npos) << run.err;
  std::filesystem::create_directories(dir_ + "/broken");
  scratch_.write("broken/tokenizer.json", "{\"model\": {\"type\": \"Unigram\"}}");
  run = tokenize({"--model", dir_ + "/broken", "--text", "a"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("broken/tokenizer.json: model.type"), std::string::npos) << run.err;
  run = tokenize({"--model", byte_model_, "--file", dir_ + "/missing.txt"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("missing.txt"), std::string::npos) << run.err;
}

}  // namespace
}  // namespace bd
