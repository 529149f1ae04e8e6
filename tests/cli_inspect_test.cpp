// `bitdelta inspect`: runs the real binary on checkpoint folders, plain safetensors files and
// broken inputs, and checks exit codes, the one-line errors and the --json object.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/mapped_file.h"
#include "io/checkpoint.h"
#include "test_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::CommandResult;
using test::expect_refusal;
using test::LlamaTensors;
using test::random_llama_tensors;
using test::run_bitdelta;
using test::ScratchDir;
using test::shell_quote;

// A small BF16 Llama: vocab 130, hidden 8, 1 layer, 2 heads, 1 KV head, untied head.
LlamaConfig tiny_config() {
  LlamaConfig config = test::llama_config({.vocab = 130,
                                           .hidden = 8,
                                           .intermediate = 16,
                                           .layers = 1,
                                           .heads = 2,
                                           .kv_heads = 1,
                                           .head_dim = 4});
  config.torch_dtype = "bfloat16";
  return config;
}

TEST(CliInspect, DescribesACheckpointAsJson) {
  ScratchDir tmp;
  const LlamaConfig config = tiny_config();
  const LlamaTensors model = random_llama_tensors(config, 3, DType::BF16);
  std::string dir = tmp / "model";
  save_checkpoint(dir, config, model.views(), "", {{"trained_by", "test"}}, false);
  Checkpoint checkpoint(dir);

  CommandResult run = run_bitdelta("inspect " + shell_quote(dir) + " --json", tmp);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(run.err.empty()) << run.err;
  json report = json::parse(run.out);  // throws unless stdout is exactly one JSON value
  EXPECT_EQ(report["path"], dir);
  EXPECT_EQ(report["kind"], "checkpoint");
  EXPECT_EQ(report["parameters"], checkpoint.parameter_count());
  EXPECT_EQ(report["fingerprint"], checkpoint.fingerprint());
  EXPECT_EQ(report["metadata"], json({{"format", "pt"}, {"trained_by", "test"}}));
  EXPECT_EQ(report["config"]["hidden_size"], 8);
  EXPECT_EQ(report["config"]["num_key_value_heads"], 1);
  EXPECT_EQ(report["config"]["torch_dtype"], "bfloat16");
  ASSERT_EQ(report["tensors"].size(), model.bytes.size());
  size_t i = 0;
  for (const auto& [name, data] : model.bytes) {  // map order: sorted by name
    const json& tensor = report["tensors"][i++];
    EXPECT_EQ(tensor["name"], name);
    EXPECT_EQ(tensor["dtype"], "BF16");
    EXPECT_EQ(tensor["shape"].get<Shape>(), model.shapes.at(name));
    EXPECT_EQ(tensor["bytes"], data.size());
  }
}

TEST(CliInspect, DescribesAShardedCheckpointWithTheSameFingerprint) {
  ScratchDir tmp;
  const LlamaConfig config = tiny_config();
  const LlamaTensors model = random_llama_tensors(config, 3, DType::BF16);
  save_checkpoint(tmp / "single", config, model.views(), "", {}, false);
  std::string dir = tmp / "sharded";
  test::write_sharded_checkpoint(dir, config, model.views(), 2);

  CommandResult single = run_bitdelta("inspect --json " + shell_quote(tmp / "single"), tmp);
  CommandResult sharded = run_bitdelta("inspect --json " + shell_quote(dir), tmp);
  ASSERT_EQ(single.exit_code, 0) << single.err;
  ASSERT_EQ(sharded.exit_code, 0) << sharded.err;
  EXPECT_EQ(json::parse(sharded.out)["fingerprint"], json::parse(single.out)["fingerprint"]);
  EXPECT_EQ(json::parse(sharded.out)["tensors"], json::parse(single.out)["tensors"]);
}

TEST(CliInspect, DescribesAnySafetensorsFile) {
  ScratchDir tmp;
  // Adapter-like content: packed bits and scales, no config.
  std::vector<uint8_t> bits = {0x0f, 0xf0, 0xaa, 0x55, 0x00, 0xff};
  std::vector<float> scale = {0.125f, 0.5f};
  std::vector<NamedTensor> tensors = {{"w.sign", TensorView{DType::U8, {2, 3}, bits.data()}},
                                      {"w.scale", TensorView{DType::F32, {2}, scale.data()}}};
  std::string path = tmp / "user.bitdelta";
  write_safetensors(path, tensors, {{"format_version", "1"}}, false);

  CommandResult run = run_bitdelta("inspect " + shell_quote(path) + " --json", tmp);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  json report = json::parse(run.out);
  EXPECT_EQ(report["kind"], "safetensors");
  EXPECT_FALSE(report.contains("config"));
  EXPECT_EQ(report["parameters"], 8);
  EXPECT_EQ(report["metadata"], json({{"format_version", "1"}}));
  EXPECT_EQ(report["fingerprint"], fingerprint_tensors(tensors));
  ASSERT_EQ(report["tensors"].size(), 2u);
  EXPECT_EQ(report["tensors"][0],
            json({{"name", "w.scale"}, {"dtype", "F32"}, {"shape", {2}}, {"bytes", 8}}));
  EXPECT_EQ(report["tensors"][1],
            json({{"name", "w.sign"}, {"dtype", "U8"}, {"shape", {2, 3}}, {"bytes", 6}}));

  CommandResult text = run_bitdelta("inspect " + shell_quote(path), tmp);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  for (const std::string& piece : {std::string("w.sign"), std::string("U8"), std::string("[2, 3]"),
                                   fingerprint_tensors(tensors), std::string("format_version = 1")})
    EXPECT_NE(text.out.find(piece), std::string::npos) << piece << " not in:\n" << text.out;
}

TEST(CliInspect, TextOutputForACheckpoint) {
  ScratchDir tmp;
  const LlamaConfig config = tiny_config();
  const LlamaTensors model = random_llama_tensors(config, 3, DType::BF16);
  save_checkpoint(tmp / "model", config, model.views(), "", {}, false);
  CommandResult run = run_bitdelta("inspect " + shell_quote(tmp / "model"), tmp);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("kind         checkpoint"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("parameters   2,680"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("heads 2 (kv 1)"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find(Checkpoint(tmp / "model").fingerprint()), std::string::npos);
  EXPECT_NE(run.out.find("model.layers.0.mlp.down_proj.weight"), std::string::npos);
}

TEST(CliInspect, FailsWithOneLineNamingTheProblem) {
  ScratchDir tmp;
  expect_refusal(run_bitdelta("inspect " + shell_quote(tmp / "missing.safetensors"), tmp), 1,
                 {tmp / "missing.safetensors", "cannot open"});

  std::vector<float> values(4, 1.0f);
  std::string path = tmp / "cut.safetensors";
  write_safetensors(path, {{"w", TensorView{DType::F32, {4}, values.data()}}}, {}, false);
  fs::resize_file(path, fs::file_size(path) - 3);
  expect_refusal(run_bitdelta("inspect --json " + shell_quote(path), tmp), 1,
                 {path, "(tensor 'w')"});

  const LlamaConfig config = tiny_config();
  const LlamaTensors model = random_llama_tensors(config, 3, DType::BF16);
  std::string dir = tmp / "model";
  save_checkpoint(dir, config, model.views(), "", {}, false);
  write_file_atomic(dir + "/config.json", "{\"hidden_size\": \"eight\"}", true);
  expect_refusal(run_bitdelta("inspect " + shell_quote(dir), tmp), 1,
                 {dir + "/config.json", "field"});

  expect_refusal(run_bitdelta("inspect", tmp), 2, {"PATH is required"});
  expect_refusal(run_bitdelta("inspect --bogus " + shell_quote(dir), tmp), 2,
                 {"unknown option --bogus"});
  expect_refusal(run_bitdelta("inspect a b", tmp), 2, {"unexpected argument 'b'"});
}

TEST(CliInspect, HasHelp) {
  ScratchDir tmp;
  CommandResult run = run_bitdelta("inspect --help", tmp);
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_NE(run.out.find("usage: bitdelta inspect PATH [--json]"), std::string::npos) << run.out;
}

}  // namespace
}  // namespace bd
