// `bitdelta tokenize`: runs the binary on tokenizer folders made in a temp dir.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "model/byte_tokenizer.h"
#include "model/tokenizer_unicode.h"

namespace bd {
namespace {

using nlohmann::json;

struct CliRun {
  int code;
  std::string out, err;
};

std::string quote(const std::string& word) {
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

void write(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class CliTokenize : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "bd_cli_tok_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    byte_model_ = dir_ + "/byte";
    std::filesystem::create_directories(byte_model_);
    write(byte_model_ + "/tokenizer.json", byte_tokenizer_json());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs `bitdelta tokenize` with `words` (each quoted), after an optional environment prefix.
  CliRun tokenize(const std::vector<std::string>& words, const std::string& env = "") {
    std::string command = env + " " + quote(BITDELTA_BINARY) + " tokenize";
    for (const std::string& word : words) command += " " + quote(word);
    command += " 2>" + quote(dir_ + "/stderr");
    FILE* pipe = popen(command.c_str(), "r");
    std::string out;
    char buffer[4096];
    for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
    const int status = pclose(pipe);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, read(dir_ + "/stderr")};
  }

  std::string dir_, byte_model_;
};

TEST_F(CliTokenize, EncodesTextAsIdsOnOneLine) {
  const CliRun run = tokenize({"--model", byte_model_, "--text", "Hi é"});
  EXPECT_EQ(run.code, 0) << run.err;
  EXPECT_EQ(run.out, "72 105 32 195 169\n");
  EXPECT_EQ(run.err, "");
}

TEST_F(CliTokenize, JsonAndSpecialTokens) {
  CliRun run = tokenize({"--model", byte_model_, "--text", "Hi", "--json"});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_EQ(json::parse(run.out), (json{{"ids", {72, 105}}}));
  run = tokenize({"--model", byte_model_, "--text", "Hi", "--add-special", "--json"});
  EXPECT_EQ(json::parse(run.out), (json{{"ids", {256, 72, 105}}}));
  run = tokenize({"--model", byte_model_, "--text", "", "--json"});
  EXPECT_EQ(json::parse(run.out), (json{{"ids", json::array()}}));
}

TEST_F(CliTokenize, FileIsReadByteForByte) {
  const std::string bytes("a\r\n\xff\0b\n", 7);
  write(dir_ + "/input.bin", bytes);
  const CliRun run = tokenize({"--model", byte_model_, "--file", dir_ + "/input.bin", "--json"});
  ASSERT_EQ(run.code, 0) << run.err;
  std::vector<int> expected;
  for (char c : bytes) expected.push_back(uint8_t(c));
  EXPECT_EQ(json::parse(run.out)["ids"], json(expected));
}

TEST_F(CliTokenize, DecodesIdsToExactText) {
  CliRun run = tokenize({"--model", byte_model_, "--decode", "72 105\n 10"});
  EXPECT_EQ(run.code, 0) << run.err;
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
  write(dir_ + "/home/models/default/tokenizer.json", byte_tokenizer_json());
  const CliRun run = tokenize({"--text", "A"}, "BITDELTA_HOME=" + quote(dir_ + "/home"));
  EXPECT_EQ(run.code, 0) << run.err;
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
  write(dir_ + "/bpe/tokenizer.json", config.dump());
  // Words "hehe" and "Ġhe": h e h e → he he; Ġ h e → Ġ he.
  CliRun run = tokenize({"--model", dir_ + "/bpe", "--text", "hehe he"});
  EXPECT_EQ(run.out, "256 256 32 256\n") << run.err;
  run = tokenize({"--model", dir_ + "/bpe", "--decode", "256 32 256"});
  EXPECT_EQ(run.out, "he he");
}

TEST_F(CliTokenize, OutOfVocabularyIdIsOneLineErrorExit1) {
  const CliRun run = tokenize({"--model", byte_model_, "--decode", "72 300"});
  EXPECT_EQ(run.code, 1);
  EXPECT_EQ(run.out, "");
  EXPECT_NE(run.err.find("token id 300 is not in the vocabulary"), std::string::npos) << run.err;
  EXPECT_EQ(run.err.find('\n'), run.err.size() - 1) << run.err;
  EXPECT_EQ(tokenize({"--model", byte_model_, "--decode", "-1"}).code, 1);
  EXPECT_EQ(tokenize({"--model", byte_model_, "--decode", "99999999999"}).code, 1);
}

TEST_F(CliTokenize, BadUsageExits2) {
  EXPECT_EQ(tokenize({"--model", byte_model_, "--decode", "7x"}).code, 2);
  EXPECT_EQ(tokenize({"--model", byte_model_}).code, 2);
  EXPECT_EQ(tokenize({"--model", byte_model_, "--text", "a", "--file", "f"}).code, 2);
  EXPECT_EQ(tokenize({"--model", byte_model_, "--decode", "1", "--add-special"}).code, 2);
  EXPECT_EQ(tokenize({"--model", byte_model_, "--text", "a", "--bogus"}).code, 2);
  const CliRun help = tokenize({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("usage: bitdelta tokenize"), std::string::npos);
}

TEST_F(CliTokenize, MissingOrBrokenTokenizerNamesTheFile) {
  CliRun run = tokenize({"--model", dir_ + "/nowhere", "--text", "a"});
  EXPECT_EQ(run.code, 1);
  EXPECT_NE(run.err.find(dir_ + "/nowhere/tokenizer.json"), std::string::npos) << run.err;
  std::filesystem::create_directories(dir_ + "/broken");
  write(dir_ + "/broken/tokenizer.json", "{\"model\": {\"type\": \"Unigram\"}}");
  run = tokenize({"--model", dir_ + "/broken", "--text", "a"});
  EXPECT_EQ(run.code, 1);
  EXPECT_NE(run.err.find("broken/tokenizer.json: model.type"), std::string::npos) << run.err;
  run = tokenize({"--model", byte_model_, "--file", dir_ + "/missing.txt"});
  EXPECT_EQ(run.code, 1);
  EXPECT_NE(run.err.find("missing.txt"), std::string::npos) << run.err;
}

}  // namespace
}  // namespace bd
