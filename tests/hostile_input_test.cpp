// Hostile numbers and bytes in the files a user hands to bitdelta: each case from issue 6 must
// end in one escaped line naming the file and the field, with a non-zero exit, at once (the run
// time bound below is a hang guard, far above the milliseconds these take; not a benchmark).
#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/blas.h"
#include "test_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::CommandResult;
using test::ScratchDir;

const std::string kDefaultModel = std::string(BITDELTA_SOURCE_DIR) + "/models/default";
constexpr double kHangGuardSeconds = 20;

// True when every byte is printable ASCII except the final newline.
bool printable_line(const std::string& text) {
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n' && i + 1 == text.size()) continue;
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

// Runs `bitdelta <arguments>`, expects a refusal with one printable line holding every piece,
// quickly.
void expect_quick_refusal(const std::string& arguments, const ScratchDir& scratch,
                          const std::vector<std::string>& pieces) {
  const auto start = std::chrono::steady_clock::now();
  const CommandResult run = test::run_bitdelta(arguments, scratch);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  test::expect_refusal(run, 1, pieces);
  EXPECT_TRUE(printable_line(run.err)) << run.err;
  EXPECT_LT(seconds, kHangGuardSeconds) << arguments;
}

// The default model with config.json's `field` set to `value` (the tensors are linked, not
// copied).
class HostileConfig : public testing::Test {
 protected:
  std::string model_with(const std::string& field, const json& value) {
    const std::string dir = scratch_ / ("model" + std::to_string(++models_));
    fs::create_directory(dir);
    for (const char* name : {"model.safetensors", "tokenizer.json"})
      fs::create_symlink(kDefaultModel + "/" + name, dir + "/" + name);
    json config = json::parse(read_file(kDefaultModel + "/config.json"));
    config[field] = value;
    test::write_bytes(dir + "/config.json", config.dump(2));
    return dir;
  }
  std::string eval_args(const std::string& model) {
    return "eval --model " + model + " --data " + scratch_.write("text.txt", "hello world\n");
  }

  ScratchDir scratch_;
  int models_ = 0;
};

TEST_F(HostileConfig, HugeLayerCountsAreRefusedAtOnce) {
  for (const json& layers : {json(100000000), json(int64_t(1) << 62)}) {
    const std::string model = model_with("num_hidden_layers", layers);
    expect_quick_refusal(
        eval_args(model), scratch_,
        {model + "/config.json", "'num_hidden_layers'", "[1, 4096]", layers.dump()});
  }
}

TEST_F(HostileConfig, MoreLayersThanTheCheckpointNamesTheFirstMissingTensor) {
  const std::string model = model_with("num_hidden_layers", 4096);
  expect_quick_refusal(eval_args(model), scratch_,
                       {model, "missing tensor 'model.layers.5.input_layernorm.weight'",
                        "num_hidden_layers 4096", "no layer 5"});
}

TEST_F(HostileConfig, HeadCountsAndHeadDimsThatWouldOverflow) {
  for (const char* field : {"num_attention_heads", "head_dim", "num_key_value_heads", "hidden_size",
                            "intermediate_size"}) {
    const std::string model = model_with(field, int64_t(1) << 62);
    expect_quick_refusal(eval_args(model), scratch_,
                         {model + "/config.json", std::string("'") + field + "'", "[1, 1048576]"});
  }
  for (const char* field : {"vocab_size", "max_position_embeddings"}) {
    const std::string model = model_with(field, uint64_t(1) << 63);
    expect_quick_refusal(eval_args(model), scratch_,
                         {model + "/config.json", std::string("'") + field + "'", "[1, 16777216]"});
  }
  // Each within its bound, their product not.
  const std::string model = model_with("head_dim", 1 << 18);
  expect_quick_refusal(
      eval_args(model), scratch_,
      {model + "/config.json", "num_attention_heads (8) x head_dim (262144)", "at most 1048576"});
}

// A safetensors file whose header says `header` (no data section).
std::string write_header_only(const ScratchDir& scratch, const std::string& name,
                              const std::string& header) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = char((header.size() >> (8 * i)) & 0xff);
  return scratch.write(name, bytes + header);
}

TEST(HostileBytes, ErrorsQuoteFileContentEscapedAndBounded) {
  ScratchDir scratch;
  // A dtype holding an escape sequence, a newline, a NUL-free invalid UTF-8 byte (written as a
  // JSON escape of U+00FF, which is two UTF-8 bytes) and a very long tail.
  const std::string dtype = "\\u001b[2J\\nBAD\\u00ff" + std::string(5000, 'x');
  const std::string path =
      write_header_only(scratch, "ansi.safetensors",
                        R"({"w":{"dtype":")" + dtype + R"(","shape":[0],"data_offsets":[0,0]}})");
  expect_quick_refusal(
      "inspect " + path, scratch,
      {path, "unsupported dtype '\\x1b[2J\\x0aBAD\\xc3\\xbfxxx", "...", "(tensor 'w')"});
  const std::string message = test::error_of([&] { SafetensorsFile file(path); });
  EXPECT_LT(message.size(), path.size() + 200) << message;

  // Raw control bytes in a tensor name reach the message only escaped, and the line stays one.
  const std::string raw_name = std::string("a\r\nb\x7f\x01", 6);
  const std::string raw = write_header_only(
      scratch, "raw.safetensors",
      "{\"" + raw_name + "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
  expect_quick_refusal("inspect " + raw, scratch, {raw, "not valid JSON"});
}

TEST(EscapeBytes, PrintableAsciiStaysEverythingElseIsHexAndTheLengthIsBounded) {
  EXPECT_EQ(escape_bytes("plain text", 100), "plain text");
  EXPECT_EQ(escape_bytes(std::string("a\0b\n\xff\\", 6), 100), "a\\x00b\\x0a\\xff\\");
  EXPECT_EQ(escape_bytes(escape_bytes("\x01\\", 100), 100), "\\x01\\");  // idempotent
  EXPECT_EQ(escape_bytes("abcdefghij", 10), "abcdefghij");
  EXPECT_EQ(escape_bytes("abcdefghijk", 10), "abcdefg...");
  // A cut never splits an escape.
  EXPECT_EQ(escape_bytes("abcdef\x01zzzz", 10), "abcdef...");
  EXPECT_EQ(quote_bytes(std::string(100, 'q')), "'" + std::string(kMaxQuotedBytes, 'q') + "'...");
  EXPECT_EQ(Error(std::string(5000, 'e')).what(), std::string(kMaxErrorMessage - 3, 'e') + "...");
}

TEST(BlasSizes, AreCheckedBeforeTheyAreNarrowedToInt) {
  // Null matrices: the check must fire before BLAS touches anything.
  const int64_t too_big = int64_t(INT_MAX) + 1;
  test::expect_error(
      [&] {
        sgemm("test", CblasNoTrans, CblasTrans, too_big, 1, 1, 1.0f, nullptr, 1, nullptr, 1, 0.0f,
              nullptr, 1);
      },
      {"test: M 2147483648 exceeds BLAS's int range"});
  test::expect_error(
      [&] {
        sgemm("test", CblasNoTrans, CblasTrans, 1, 1, 1, 1.0f, nullptr, int64_t(1) << 40, nullptr,
              1, 0.0f, nullptr, 1);
      },
      {"test: lda 1099511627776 exceeds BLAS's int range"});
  test::expect_error([&] { blas_int(-1, "test", "N"); }, {"test: N -1 is negative"});
  EXPECT_EQ(blas_int(INT_MAX, "test", "N"), INT_MAX);
}

}  // namespace
}  // namespace bd
