// Hugging Face checkpoint folders: save and load, shards, fingerprints (checked against an
// independent Python hashlib implementation), Llama tensor validation, and bad folders.
#include "io/checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "test_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::expect_error;
using test::folder_entries;
using test::LlamaTensors;
using test::random_llama_tensors;
using test::ScratchDir;
using test::write_sharded_checkpoint;

// A tiny GQA Llama whose head_dim (4) differs from hidden_size / heads (2).
LlamaConfig tiny_config(bool tied = false) {
  LlamaConfig config = test::llama_config({.vocab = 11,
                                           .hidden = 8,
                                           .intermediate = 12,
                                           .layers = 2,
                                           .heads = 4,
                                           .kv_heads = 2,
                                           .head_dim = 4,
                                           .tied = tied});
  config.bos_token_id = 1;
  config.eos_token_id = 2;
  return config;
}

// The fingerprint of `files` (e.g. shards) computed independently with Python's hashlib.
std::string python_fingerprint(const std::vector<std::string>& files, const ScratchDir& scratch) {
  std::string arguments = "fingerprint";
  for (const std::string& file : files) arguments += " " + test::shell_quote(file);
  const test::CommandResult run = test::run_reference("safetensors_ref.py", arguments, scratch);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  return run.out.ends_with('\n') ? run.out.substr(0, run.out.size() - 1) : run.out;
}

TEST(Checkpoint, SavesAndLoadsAFolder) {
  ScratchDir tmp;
  LlamaConfig config = tiny_config();
  LlamaTensors weights = random_llama_tensors(config, 7);
  std::string dir = tmp / "model";
  save_checkpoint(dir, config, weights.views(), "{\"model\": {}}", {{"run", "test"}}, false);
  EXPECT_EQ(folder_entries(dir),
            (std::vector<std::string>{"config.json", "model.safetensors", "tokenizer.json"}));
  EXPECT_EQ(read_file(dir + "/tokenizer.json"), "{\"model\": {}}");

  Checkpoint checkpoint(dir);
  EXPECT_EQ(checkpoint.dir(), dir);
  EXPECT_EQ(checkpoint.config().head_dim, 4);
  EXPECT_EQ(checkpoint.config().num_key_value_heads, 2);
  EXPECT_EQ(checkpoint.metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"run", "test"}}));
  std::vector<std::string> names;
  int64_t parameters = 0;
  for (const auto& [name, data] : weights.bytes) {
    names.push_back(name);
    parameters += shape_numel(weights.shapes[name]);
    const TensorView& view = checkpoint.get(name);
    EXPECT_EQ(view.shape, weights.shapes[name]);
    EXPECT_EQ(std::memcmp(view.data, data.data(), data.size()), 0) << name;
  }
  EXPECT_EQ(checkpoint.tensor_names(), names);
  EXPECT_EQ(checkpoint.parameter_count(), parameters);
  EXPECT_EQ(checkpoint.find("lm_head.bias"), nullptr);
  expect_error([&] { checkpoint.get("lm_head.bias"); }, {dir, "no tensor 'lm_head.bias'"});
  validate_llama_tensors(checkpoint);
}

TEST(Checkpoint, TiedEmbeddingsNeedNoHead) {
  ScratchDir tmp;
  LlamaConfig config = tiny_config(/*tied=*/true);
  save_checkpoint(tmp / "tied", config, random_llama_tensors(config, 7).views(), "", {}, false);
  Checkpoint checkpoint(tmp / "tied");
  EXPECT_TRUE(checkpoint.config().tie_word_embeddings);
  validate_llama_tensors(checkpoint);
  EXPECT_FALSE(path_exists(tmp / "tied/tokenizer.json"));
}

TEST(Checkpoint, ShardedAndSingleFileHaveTheSameFingerprint) {
  ScratchDir tmp;
  LlamaConfig config = tiny_config();
  LlamaTensors weights = random_llama_tensors(config, 7);
  save_checkpoint(tmp / "single", config, weights.views(), "", {}, false);
  write_sharded_checkpoint(tmp / "sharded", config, weights.views(), 3);

  Checkpoint single(tmp / "single");
  Checkpoint sharded(tmp / "sharded");
  validate_llama_tensors(sharded);
  EXPECT_EQ(sharded.tensor_names(), single.tensor_names());
  EXPECT_EQ(sharded.parameter_count(), single.parameter_count());
  std::string fingerprint = single.fingerprint();
  EXPECT_EQ(fingerprint.size(), 64u);
  EXPECT_EQ(sharded.fingerprint(), fingerprint);
  EXPECT_EQ(fingerprint_tensors(weights.views()), fingerprint);

  // The documented definition, computed independently with Python's hashlib.
  EXPECT_EQ(python_fingerprint({tmp / "single/model.safetensors"}, tmp), fingerprint);
  std::vector<std::string> shards;
  for (int i = 1; i <= 3; ++i) shards.push_back(tmp / "sharded/" + test::shard_name(i, 3));
  EXPECT_EQ(python_fingerprint(shards, tmp), fingerprint);
}

TEST(Checkpoint, FingerprintSeesNamesDtypesShapesAndBytes) {
  std::vector<float> values = {1, 2, 3, 4};
  auto fingerprint_of = [&](std::string name, DType dtype, Shape shape) {
    return fingerprint_tensors({{name, TensorView{dtype, shape, values.data()}}});
  };
  std::string base = fingerprint_of("w", DType::F32, {4});
  EXPECT_NE(fingerprint_of("v", DType::F32, {4}), base);
  EXPECT_NE(fingerprint_of("w", DType::F32, {2, 2}), base);
  EXPECT_NE(fingerprint_of("w", DType::I32, {4}), base);
  EXPECT_NE(fingerprint_of("w", DType::BF16, {8}), base);
  values[3] = 5;
  EXPECT_NE(fingerprint_of("w", DType::F32, {4}), base);
  values[3] = 4;
  EXPECT_EQ(fingerprint_of("w", DType::F32, {4}), base);
  // The separators keep name/dtype boundaries apart: "w" + "F32" differs from "wF" + "32".
  std::vector<NamedTensor> duplicated = {{"w", TensorView{DType::F32, {4}, values.data()}},
                                         {"w", TensorView{DType::F32, {4}, values.data()}}};
  expect_error([&] { fingerprint_tensors(duplicated); }, {"duplicate tensor name 'w'"});
  // Empty model: SHA-256 of nothing.
  EXPECT_EQ(fingerprint_tensors({}),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Checkpoint, SaveRefusesANonEmptyFolderUnlessOverwriting) {
  ScratchDir tmp;
  LlamaConfig config = tiny_config();
  LlamaTensors first = random_llama_tensors(config, 1), second = random_llama_tensors(config, 2);
  std::string dir = tmp / "model";
  write_sharded_checkpoint(dir, config, first.views(), 2);
  std::string sharded_fingerprint = Checkpoint(dir).fingerprint();
  expect_error([&] { save_checkpoint(dir, config, second.views(), "", {}, false); },
               {dir, "not empty", "--force"});
  EXPECT_EQ(Checkpoint(dir).fingerprint(), sharded_fingerprint);

  save_checkpoint(dir, config, second.views(), "", {}, true);
  // The stale index and its shards are gone, so the folder holds exactly the new model.
  EXPECT_EQ(folder_entries(dir), (std::vector<std::string>{"config.json", "model.safetensors"}));
  EXPECT_EQ(Checkpoint(dir).fingerprint(), fingerprint_tensors(second.views()));

  write_file_atomic(tmp / "plain", "x", false);
  expect_error([&] { save_checkpoint(tmp / "plain", config, second.views(), "", {}, true); },
               {tmp / "plain", "not a folder"});
}

TEST(Checkpoint, SaveChecksTensorsAgainstTheConfigBeforeWriting) {
  ScratchDir tmp;
  LlamaConfig config = tiny_config();
  LlamaTensors weights = random_llama_tensors(config, 7);
  weights.erase("model.layers.1.mlp.up_proj.weight");
  expect_error([&] { save_checkpoint(tmp / "bad", config, weights.views(), "", {}, false); },
               {tmp / "bad", "missing tensor 'model.layers.1.mlp.up_proj.weight'"});
  EXPECT_FALSE(path_exists(tmp / "bad"));
}

// A folder that is valid except for one edit, then checked with Checkpoint and
// validate_llama_tensors.
class BrokenFolder : public testing::Test {
 protected:
  void SetUp() override {
    dir = tmp / "model";
    config = tiny_config();
    weights = random_llama_tensors(config, 7);
  }
  void save() { save_checkpoint(dir, config, weights.views(), "", {}, true); }
  void save_raw_tensors() {  // bypasses save_checkpoint's own validation
    make_dirs(dir);
    write_file_atomic(dir + "/config.json", llama_config_json(config), true);
    write_safetensors(dir + "/model.safetensors", weights.views(), {}, true);
  }
  void expect_invalid(const std::vector<std::string>& pieces) {
    expect_error([&] { validate_llama_tensors(Checkpoint(dir)); }, pieces);
  }
  ScratchDir tmp;
  std::string dir;
  LlamaConfig config;
  LlamaTensors weights;
};

TEST_F(BrokenFolder, MissingTensor) {
  weights.erase("model.layers.0.self_attn.k_proj.weight");
  save_raw_tensors();
  expect_invalid(
      {dir, "missing tensor 'model.layers.0.self_attn.k_proj.weight'", "num_key_value_heads 2"});
}

TEST_F(BrokenFolder, MissingHeadWhenUntied) {
  weights.erase("lm_head.weight");
  save_raw_tensors();
  expect_invalid({dir, "missing tensor 'lm_head.weight'", "tie_word_embeddings false"});
}

TEST_F(BrokenFolder, ConfigContradictsShapes) {
  save();
  config.num_key_value_heads = 4;  // the k_proj/v_proj stored have 2 heads
  write_file_atomic(dir + "/config.json", llama_config_json(config), true);
  expect_invalid(
      {dir, "tensor 'model.layers.0.self_attn.k_proj.weight' has shape [8, 8]", "implies [16, 8]"});
}

TEST_F(BrokenFolder, ConfigHasFewerLayersThanTensors) {
  save();
  config.num_hidden_layers = 1;
  write_file_atomic(dir + "/config.json", llama_config_json(config), true);
  expect_invalid({dir, "unexpected tensor 'model.layers.1."});
}

TEST_F(BrokenFolder, ConfigHasMoreLayersThanTensors) {
  save();
  config.num_hidden_layers = 3;
  write_file_atomic(dir + "/config.json", llama_config_json(config), true);
  expect_invalid({dir, "missing tensor 'model.layers.2.input_layernorm.weight'"});
}

TEST_F(BrokenFolder, NonFloatWeights) {
  std::vector<NamedTensor> tensors = weights.views();
  for (NamedTensor& tensor : tensors)
    if (tensor.name == "model.norm.weight") tensor.view.dtype = DType::I32;
  make_dirs(dir);
  write_file_atomic(dir + "/config.json", llama_config_json(config), true);
  write_safetensors(dir + "/model.safetensors", tensors, {}, true);
  expect_invalid({dir, "'model.norm.weight' has dtype I32"});
}

TEST_F(BrokenFolder, BadConfigField) {
  save();
  std::string text = llama_config_json(config);
  text.replace(text.find("\"hidden_size\": 8"), 16, "\"hidden_size\": -8");
  write_file_atomic(dir + "/config.json", text, true);
  expect_error([&] { Checkpoint checkpoint(dir); },
               {dir + "/config.json", "'hidden_size'", "must be an integer in [1, 1048576]"});
}

TEST_F(BrokenFolder, MissingConfig) {
  save();
  fs::remove(dir + "/config.json");
  expect_error([&] { Checkpoint checkpoint(dir); }, {dir + "/config.json", "cannot open"});
}

TEST_F(BrokenFolder, NoWeights) {
  save();
  fs::remove(dir + "/model.safetensors");
  expect_error([&] { Checkpoint checkpoint(dir); },
               {dir, "no model.safetensors or model.safetensors.index.json"});
}

TEST_F(BrokenFolder, CorruptWeights) {
  save();
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") - 1);
  expect_error([&] { Checkpoint checkpoint(dir); }, {dir + "/model.safetensors", "run past"});
}

TEST_F(BrokenFolder, UnreadablePaths) {
  expect_error([&] { Checkpoint checkpoint(tmp / "nowhere"); },
               {tmp / "nowhere", "no such folder"});
  write_file_atomic(tmp / "file", "x", false);
  expect_error([&] { Checkpoint checkpoint(tmp / "file"); }, {tmp / "file", "not a directory"});
}

TEST_F(BrokenFolder, MissingShard) {
  write_sharded_checkpoint(dir, config, weights.views(), 2);
  fs::remove(dir + "/model-00002-of-00002.safetensors");
  expect_error([&] { Checkpoint checkpoint(dir); },
               {dir + "/model-00002-of-00002.safetensors", "cannot open"});
}

// Rewrites the index of a sharded folder through `edit`.
void edit_index(const std::string& dir, const std::function<void(json&)>& edit) {
  json index = json::parse(read_file(dir + "/model.safetensors.index.json"));
  edit(index);
  write_file_atomic(dir + "/model.safetensors.index.json", index.dump(), true);
}

TEST_F(BrokenFolder, IndexNamesATensorTheShardLacks) {
  write_sharded_checkpoint(dir, config, weights.views(), 2);
  edit_index(dir, [](json& index) {
    index["weight_map"]["model.extra.weight"] = "model-00001-of-00002.safetensors";
  });
  expect_error([&] { Checkpoint checkpoint(dir); },
               {dir + "/model.safetensors.index.json", "'model.extra.weight'", "no such tensor"});
}

TEST_F(BrokenFolder, IndexPutsATensorInTheWrongShard) {
  write_sharded_checkpoint(dir, config, weights.views(), 2);
  edit_index(dir, [](json& index) {
    index["weight_map"]["model.norm.weight"] =
        index["weight_map"]["model.norm.weight"] == "model-00001-of-00002.safetensors"
            ? "model-00002-of-00002.safetensors"
            : "model-00001-of-00002.safetensors";
  });
  expect_error([&] { Checkpoint checkpoint(dir); }, {"'model.norm.weight'", "but it is in"});
}

TEST_F(BrokenFolder, ShardTensorMissingFromIndex) {
  write_sharded_checkpoint(dir, config, weights.views(), 2);
  edit_index(dir, [](json& index) { index["weight_map"].erase("model.norm.weight"); });
  expect_error([&] { Checkpoint checkpoint(dir); },
               {"'model.norm.weight'", "is not in weight_map"});
}

TEST_F(BrokenFolder, TensorInTwoShards) {
  write_sharded_checkpoint(dir, config, weights.views(), 2);
  // A third shard repeating one tensor, listed in the index through another tensor name.
  std::vector<NamedTensor> views = weights.views();
  write_safetensors(dir + "/extra.safetensors", {views[0], views[1]}, {}, false);
  edit_index(dir, [&](json& index) { index["weight_map"][views[1].name] = "extra.safetensors"; });
  expect_error([&] { Checkpoint checkpoint(dir); }, {dir, "is in two shards"});
}

TEST_F(BrokenFolder, IndexNotJsonOrEscapingTheFolder) {
  write_sharded_checkpoint(dir, config, weights.views(), 2);
  write_file_atomic(dir + "/model.safetensors.index.json", "{\"weight_map\": ", true);
  expect_error([&] { Checkpoint checkpoint(dir); },
               {dir + "/model.safetensors.index.json", "not valid JSON"});
  write_file_atomic(dir + "/model.safetensors.index.json",
                    R"({"weight_map": {"model.norm.weight": "../model.safetensors"}})", true);
  expect_error([&] { Checkpoint checkpoint(dir); }, {"'../model.safetensors'", "not a file in"});
  write_file_atomic(dir + "/model.safetensors.index.json", R"({"weights": {}})", true);
  expect_error([&] { Checkpoint checkpoint(dir); }, {"missing 'weight_map'"});
}

}  // namespace
}  // namespace bd
