// `bitdelta inspect`: runs the real binary on checkpoint folders, plain safetensors files and
// broken inputs, and checks exit codes, the one-line errors and the --json object.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "core/atomic_file.h"
#include "core/mapped_file.h"
#include "io/checkpoint.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "bd_inspect_XXXXXX").string();
    path = ::mkdtemp(pattern.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

struct CliResult {
  int exit_code;
  std::string out, err;
};

// Runs `bitdelta <arguments>` with stdout and stderr captured in files of `dir`.
CliResult run_bitdelta(const TempDir& dir, const std::string& arguments) {
  std::string out = dir.file("stdout"), err = dir.file("stderr");
  std::string command =
      std::string("'") + BITDELTA_BINARY + "' " + arguments + " >'" + out + "' 2>'" + err + "'";
  int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(out), read_file(err)};
}

std::string shell_quoted(const std::string& path) {
  return "'" + path + "'";
}

// A small BF16 Llama: vocab 130, hidden 8, 1 layer, 2 heads, 1 KV head, untied head.
struct TinyModel {
  LlamaConfig config;
  std::map<std::string, std::vector<uint16_t>> values;
  std::map<std::string, Shape> shapes;

  TinyModel() {
    config.vocab_size = 130;
    config.hidden_size = 8;
    config.intermediate_size = 16;
    config.num_hidden_layers = 1;
    config.num_attention_heads = 2;
    config.num_key_value_heads = 1;
    config.head_dim = 4;
    config.torch_dtype = "bfloat16";
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    auto add = [&](const std::string& name, Shape shape) {
      shapes[name] = shape;
      for (int64_t i = 0; i < shape_numel(shape); ++i)
        values[name].push_back(f32_to_bf16(normal(rng)));
    };
    add("model.embed_tokens.weight", {130, 8});
    add("model.layers.0.input_layernorm.weight", {8});
    add("model.layers.0.post_attention_layernorm.weight", {8});
    add("model.layers.0.self_attn.q_proj.weight", {8, 8});
    add("model.layers.0.self_attn.k_proj.weight", {4, 8});
    add("model.layers.0.self_attn.v_proj.weight", {4, 8});
    add("model.layers.0.self_attn.o_proj.weight", {8, 8});
    add("model.layers.0.mlp.gate_proj.weight", {16, 8});
    add("model.layers.0.mlp.up_proj.weight", {16, 8});
    add("model.layers.0.mlp.down_proj.weight", {8, 16});
    add("model.norm.weight", {8});
    add("lm_head.weight", {130, 8});
  }
  std::vector<NamedTensor> views() const {
    std::vector<NamedTensor> out;
    for (const auto& [name, data] : values)
      out.push_back({name, TensorView{DType::BF16, shapes.at(name), data.data()}});
    return out;
  }
};

// Checks that a failed run printed exactly one line on stderr containing every piece.
void expect_one_line_error(const CliResult& run, int exit_code,
                           const std::vector<std::string>& pieces) {
  EXPECT_EQ(run.exit_code, exit_code) << run.err;
  EXPECT_TRUE(run.out.empty()) << run.out;
  ASSERT_FALSE(run.err.empty());
  EXPECT_EQ(run.err.find('\n'), run.err.size() - 1) << run.err;
  for (const std::string& piece : pieces)
    EXPECT_NE(run.err.find(piece), std::string::npos) << "'" << piece << "' not in: " << run.err;
}

TEST(CliInspect, DescribesACheckpointAsJson) {
  TempDir tmp;
  TinyModel model;
  std::string dir = tmp.file("model");
  save_checkpoint(dir, model.config, model.views(), "", {{"trained_by", "test"}}, false);
  Checkpoint checkpoint(dir);

  CliResult run = run_bitdelta(tmp, "inspect " + shell_quoted(dir) + " --json");
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
  ASSERT_EQ(report["tensors"].size(), model.values.size());
  size_t i = 0;
  for (const auto& [name, data] : model.values) {  // map order: sorted by name
    const json& tensor = report["tensors"][i++];
    EXPECT_EQ(tensor["name"], name);
    EXPECT_EQ(tensor["dtype"], "BF16");
    EXPECT_EQ(tensor["shape"].get<Shape>(), model.shapes[name]);
    EXPECT_EQ(tensor["bytes"], data.size() * 2);
  }
}

TEST(CliInspect, DescribesAShardedCheckpointWithTheSameFingerprint) {
  TempDir tmp;
  TinyModel model;
  save_checkpoint(tmp.file("single"), model.config, model.views(), "", {}, false);
  std::string dir = tmp.file("sharded");
  make_dirs(dir);
  write_file_atomic(dir + "/config.json", llama_config_json(model.config), false);
  std::vector<NamedTensor> views = model.views(), first(views.begin(), views.begin() + 5),
                           second(views.begin() + 5, views.end());
  write_safetensors(dir + "/a.safetensors", first, {{"format", "pt"}}, false);
  write_safetensors(dir + "/b.safetensors", second, {{"format", "pt"}}, false);
  json weight_map;
  for (const NamedTensor& tensor : first) weight_map[tensor.name] = "a.safetensors";
  for (const NamedTensor& tensor : second) weight_map[tensor.name] = "b.safetensors";
  write_file_atomic(dir + "/model.safetensors.index.json",
                    json({{"weight_map", weight_map}}).dump(), false);

  CliResult single = run_bitdelta(tmp, "inspect --json " + shell_quoted(tmp.file("single")));
  CliResult sharded = run_bitdelta(tmp, "inspect --json " + shell_quoted(dir));
  ASSERT_EQ(single.exit_code, 0) << single.err;
  ASSERT_EQ(sharded.exit_code, 0) << sharded.err;
  EXPECT_EQ(json::parse(sharded.out)["fingerprint"], json::parse(single.out)["fingerprint"]);
  EXPECT_EQ(json::parse(sharded.out)["tensors"], json::parse(single.out)["tensors"]);
}

TEST(CliInspect, DescribesAnySafetensorsFile) {
  TempDir tmp;
  // Adapter-like content: packed bits and scales, no config.
  std::vector<uint8_t> bits = {0x0f, 0xf0, 0xaa, 0x55, 0x00, 0xff};
  std::vector<float> scale = {0.125f, 0.5f};
  std::vector<NamedTensor> tensors = {{"w.sign", TensorView{DType::U8, {2, 3}, bits.data()}},
                                      {"w.scale", TensorView{DType::F32, {2}, scale.data()}}};
  std::string path = tmp.file("user.bitdelta");
  write_safetensors(path, tensors, {{"format_version", "1"}}, false);

  CliResult run = run_bitdelta(tmp, "inspect " + shell_quoted(path) + " --json");
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

  CliResult text = run_bitdelta(tmp, "inspect " + shell_quoted(path));
  ASSERT_EQ(text.exit_code, 0) << text.err;
  for (const std::string& piece : {std::string("w.sign"), std::string("U8"), std::string("[2, 3]"),
                                   fingerprint_tensors(tensors), std::string("format_version = 1")})
    EXPECT_NE(text.out.find(piece), std::string::npos) << piece << " not in:\n" << text.out;
}

TEST(CliInspect, TextOutputForACheckpoint) {
  TempDir tmp;
  TinyModel model;
  save_checkpoint(tmp.file("model"), model.config, model.views(), "", {}, false);
  CliResult run = run_bitdelta(tmp, "inspect " + shell_quoted(tmp.file("model")));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("kind         checkpoint"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("parameters   2,680"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("heads 2 (kv 1)"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find(Checkpoint(tmp.file("model")).fingerprint()), std::string::npos);
  EXPECT_NE(run.out.find("model.layers.0.mlp.down_proj.weight"), std::string::npos);
}

TEST(CliInspect, FailsWithOneLineNamingTheProblem) {
  TempDir tmp;
  expect_one_line_error(
      run_bitdelta(tmp, "inspect " + shell_quoted(tmp.file("missing.safetensors"))), 1,
      {tmp.file("missing.safetensors"), "cannot open"});

  std::vector<float> values(4, 1.0f);
  std::string path = tmp.file("cut.safetensors");
  write_safetensors(path, {{"w", TensorView{DType::F32, {4}, values.data()}}}, {}, false);
  fs::resize_file(path, fs::file_size(path) - 3);
  expect_one_line_error(run_bitdelta(tmp, "inspect --json " + shell_quoted(path)), 1,
                        {path, "(tensor 'w')"});

  TinyModel model;
  std::string dir = tmp.file("model");
  save_checkpoint(dir, model.config, model.views(), "", {}, false);
  write_file_atomic(dir + "/config.json", "{\"hidden_size\": \"eight\"}", true);
  expect_one_line_error(run_bitdelta(tmp, "inspect " + shell_quoted(dir)), 1,
                        {dir + "/config.json", "field"});

  expect_one_line_error(run_bitdelta(tmp, "inspect"), 2, {"PATH is required"});
  expect_one_line_error(run_bitdelta(tmp, "inspect --bogus " + shell_quoted(dir)), 2,
                        {"unknown option --bogus"});
  expect_one_line_error(run_bitdelta(tmp, "inspect a b"), 2, {"unexpected argument 'b'"});
}

TEST(CliInspect, HasHelp) {
  TempDir tmp;
  CliResult run = run_bitdelta(tmp, "inspect --help");
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_NE(run.out.find("usage: bitdelta inspect PATH [--json]"), std::string::npos) << run.out;
}

}  // namespace
}  // namespace bd
