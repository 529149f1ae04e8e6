// Hugging Face checkpoint folders: save and load, shards, fingerprints (checked against an
// independent Python hashlib implementation), Llama tensor validation, and bad folders.
#include "io/checkpoint.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "core/atomic_file.h"
#include "core/error.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "bd_checkpoint_XXXXXX").string();
    path = ::mkdtemp(pattern.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

std::vector<std::string> folder_entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

template <typename Action>
void expect_error(Action action, const std::vector<std::string>& pieces) {
  try {
    action();
    ADD_FAILURE() << "no error; expected one containing '" << pieces.front() << "'";
  } catch (const Error& error) {
    std::string message = error.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    for (const std::string& piece : pieces)
      EXPECT_NE(message.find(piece), std::string::npos) << "'" << piece << "' not in: " << message;
  }
}

// A tiny GQA Llama whose head_dim (4) differs from hidden_size / heads (2).
LlamaConfig tiny_config(bool tied = false) {
  LlamaConfig config;
  config.vocab_size = 11;
  config.hidden_size = 8;
  config.intermediate_size = 12;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 4;
  config.tie_word_embeddings = tied;
  config.bos_token_id = 1;
  config.eos_token_id = 2;
  return config;
}

// Random weights with the shapes a Llama of `config` needs, owning their storage.
struct Weights {
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, Shape> shapes;

  void add(const std::string& name, Shape shape, std::mt19937& rng) {
    std::normal_distribution<float> normal;
    std::vector<float>& data = values[name];
    data.resize(size_t(shape_numel(shape)));
    for (float& x : data) x = normal(rng);
    shapes[name] = shape;
  }
  std::vector<NamedTensor> views() const {
    std::vector<NamedTensor> out;
    for (const auto& [name, data] : values)
      out.push_back({name, TensorView{DType::F32, shapes.at(name), data.data()}});
    return out;
  }
};

Weights llama_weights(const LlamaConfig& c, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  Weights w;
  int64_t H = c.hidden_size, q = c.num_attention_heads * c.head_dim;
  int64_t kv = c.num_key_value_heads * c.head_dim, I = c.intermediate_size;
  w.add("model.embed_tokens.weight", {c.vocab_size, H}, rng);
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    std::string p = "model.layers." + std::to_string(layer) + ".";
    w.add(p + "input_layernorm.weight", {H}, rng);
    w.add(p + "post_attention_layernorm.weight", {H}, rng);
    w.add(p + "self_attn.q_proj.weight", {q, H}, rng);
    w.add(p + "self_attn.k_proj.weight", {kv, H}, rng);
    w.add(p + "self_attn.v_proj.weight", {kv, H}, rng);
    w.add(p + "self_attn.o_proj.weight", {H, q}, rng);
    w.add(p + "mlp.gate_proj.weight", {I, H}, rng);
    w.add(p + "mlp.up_proj.weight", {I, H}, rng);
    w.add(p + "mlp.down_proj.weight", {H, I}, rng);
  }
  w.add("model.norm.weight", {H}, rng);
  if (!c.tie_word_embeddings) w.add("lm_head.weight", {c.vocab_size, H}, rng);
  return w;
}

// Writes a sharded folder by hand, the way transformers does: tensors spread over `shards`
// files and an index mapping each name to its file.
void write_sharded(const std::string& dir, const LlamaConfig& config, const Weights& weights,
                   int shards) {
  make_dirs(dir);
  write_file_atomic(dir + "/config.json", llama_config_json(config), false);
  std::vector<std::vector<NamedTensor>> parts(static_cast<size_t>(shards));
  json weight_map;
  int index = 0;
  for (const NamedTensor& tensor : weights.views()) {
    int shard = index++ % shards;
    parts[size_t(shard)].push_back(tensor);
    weight_map[tensor.name] = "model-0000" + std::to_string(shard + 1) + "-of-0000" +
                              std::to_string(shards) + ".safetensors";
  }
  for (int shard = 0; shard < shards; ++shard)
    write_safetensors(dir + "/model-0000" + std::to_string(shard + 1) + "-of-0000" +
                          std::to_string(shards) + ".safetensors",
                      parts[size_t(shard)], {{"format", "pt"}}, false);
  json index_json = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  write_file_atomic(dir + "/model.safetensors.index.json", index_json.dump(2), false);
}

std::string python_fingerprint(const std::vector<std::string>& files) {
  std::string command =
      "/usr/bin/python3 " BITDELTA_SOURCE_DIR "/tests/reference/safetensors_ref.py fingerprint";
  for (const std::string& file : files) command += " " + file;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  char buffer[128] = {};
  size_t got = pipe ? std::fread(buffer, 1, sizeof buffer - 1, pipe) : 0;
  EXPECT_EQ(pipe ? ::pclose(pipe) : -1, 0) << command;
  return std::string(buffer, got > 0 ? got - 1 : 0);  // without the newline
}

TEST(Checkpoint, SavesAndLoadsAFolder) {
  TempDir tmp;
  LlamaConfig config = tiny_config();
  Weights weights = llama_weights(config);
  std::string dir = tmp.file("model");
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
  for (const auto& [name, data] : weights.values) {
    names.push_back(name);
    parameters += int64_t(data.size());
    const TensorView& view = checkpoint.get(name);
    EXPECT_EQ(view.shape, weights.shapes[name]);
    EXPECT_EQ(std::memcmp(view.data, data.data(), data.size() * 4), 0) << name;
  }
  EXPECT_EQ(checkpoint.tensor_names(), names);
  EXPECT_EQ(checkpoint.parameter_count(), parameters);
  EXPECT_EQ(checkpoint.find("lm_head.bias"), nullptr);
  expect_error([&] { checkpoint.get("lm_head.bias"); }, {dir, "no tensor 'lm_head.bias'"});
  validate_llama_tensors(checkpoint);
}

TEST(Checkpoint, TiedEmbeddingsNeedNoHead) {
  TempDir tmp;
  LlamaConfig config = tiny_config(/*tied=*/true);
  save_checkpoint(tmp.file("tied"), config, llama_weights(config).views(), "", {}, false);
  Checkpoint checkpoint(tmp.file("tied"));
  EXPECT_TRUE(checkpoint.config().tie_word_embeddings);
  validate_llama_tensors(checkpoint);
  EXPECT_FALSE(path_exists(tmp.file("tied/tokenizer.json")));
}

TEST(Checkpoint, ShardedAndSingleFileHaveTheSameFingerprint) {
  TempDir tmp;
  LlamaConfig config = tiny_config();
  Weights weights = llama_weights(config);
  save_checkpoint(tmp.file("single"), config, weights.views(), "", {}, false);
  write_sharded(tmp.file("sharded"), config, weights, 3);

  Checkpoint single(tmp.file("single"));
  Checkpoint sharded(tmp.file("sharded"));
  validate_llama_tensors(sharded);
  EXPECT_EQ(sharded.tensor_names(), single.tensor_names());
  EXPECT_EQ(sharded.parameter_count(), single.parameter_count());
  std::string fingerprint = single.fingerprint();
  EXPECT_EQ(fingerprint.size(), 64u);
  EXPECT_EQ(sharded.fingerprint(), fingerprint);
  EXPECT_EQ(fingerprint_tensors(weights.views()), fingerprint);

  // The documented definition, computed independently with Python's hashlib.
  EXPECT_EQ(python_fingerprint({tmp.file("single/model.safetensors")}), fingerprint);
  std::vector<std::string> shards;
  for (int i = 1; i <= 3; ++i)
    shards.push_back(tmp.file("sharded/model-0000" + std::to_string(i) + "-of-00003.safetensors"));
  EXPECT_EQ(python_fingerprint(shards), fingerprint);
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
  TempDir tmp;
  LlamaConfig config = tiny_config();
  Weights first = llama_weights(config, 1), second = llama_weights(config, 2);
  std::string dir = tmp.file("model");
  write_sharded(dir, config, first, 2);
  std::string sharded_fingerprint = Checkpoint(dir).fingerprint();
  expect_error([&] { save_checkpoint(dir, config, second.views(), "", {}, false); },
               {dir, "not empty", "--force"});
  EXPECT_EQ(Checkpoint(dir).fingerprint(), sharded_fingerprint);

  save_checkpoint(dir, config, second.views(), "", {}, true);
  // The stale index and its shards are gone, so the folder holds exactly the new model.
  EXPECT_EQ(folder_entries(dir), (std::vector<std::string>{"config.json", "model.safetensors"}));
  EXPECT_EQ(Checkpoint(dir).fingerprint(), fingerprint_tensors(second.views()));

  write_file_atomic(tmp.file("plain"), "x", false);
  expect_error([&] { save_checkpoint(tmp.file("plain"), config, second.views(), "", {}, true); },
               {tmp.file("plain"), "not a folder"});
}

TEST(Checkpoint, SaveChecksTensorsAgainstTheConfigBeforeWriting) {
  TempDir tmp;
  LlamaConfig config = tiny_config();
  Weights weights = llama_weights(config);
  weights.values.erase("model.layers.1.mlp.up_proj.weight");
  expect_error([&] { save_checkpoint(tmp.file("bad"), config, weights.views(), "", {}, false); },
               {tmp.file("bad"), "missing tensor 'model.layers.1.mlp.up_proj.weight'"});
  EXPECT_FALSE(path_exists(tmp.file("bad")));
}

// A folder that is valid except for one edit, then checked with Checkpoint and
// validate_llama_tensors.
class BrokenFolder : public testing::Test {
 protected:
  void SetUp() override {
    dir = tmp.file("model");
    config = tiny_config();
    weights = llama_weights(config);
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
  TempDir tmp;
  std::string dir;
  LlamaConfig config;
  Weights weights;
};

TEST_F(BrokenFolder, MissingTensor) {
  weights.values.erase("model.layers.0.self_attn.k_proj.weight");
  save_raw_tensors();
  expect_invalid(
      {dir, "missing tensor 'model.layers.0.self_attn.k_proj.weight'", "num_key_value_heads 2"});
}

TEST_F(BrokenFolder, MissingHeadWhenUntied) {
  weights.values.erase("lm_head.weight");
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
               {dir + "/config.json", "'hidden_size'", "positive integer"});
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
  expect_error([&] { Checkpoint checkpoint(tmp.file("nowhere")); },
               {tmp.file("nowhere"), "no such folder"});
  write_file_atomic(tmp.file("file"), "x", false);
  expect_error([&] { Checkpoint checkpoint(tmp.file("file")); },
               {tmp.file("file"), "not a directory"});
}

TEST_F(BrokenFolder, MissingShard) {
  write_sharded(dir, config, weights, 2);
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
  write_sharded(dir, config, weights, 2);
  edit_index(dir, [](json& index) {
    index["weight_map"]["model.extra.weight"] = "model-00001-of-00002.safetensors";
  });
  expect_error([&] { Checkpoint checkpoint(dir); },
               {dir + "/model.safetensors.index.json", "'model.extra.weight'", "no such tensor"});
}

TEST_F(BrokenFolder, IndexPutsATensorInTheWrongShard) {
  write_sharded(dir, config, weights, 2);
  edit_index(dir, [](json& index) {
    index["weight_map"]["model.norm.weight"] =
        index["weight_map"]["model.norm.weight"] == "model-00001-of-00002.safetensors"
            ? "model-00002-of-00002.safetensors"
            : "model-00001-of-00002.safetensors";
  });
  expect_error([&] { Checkpoint checkpoint(dir); }, {"'model.norm.weight'", "but it is in"});
}

TEST_F(BrokenFolder, ShardTensorMissingFromIndex) {
  write_sharded(dir, config, weights, 2);
  edit_index(dir, [](json& index) { index["weight_map"].erase("model.norm.weight"); });
  expect_error([&] { Checkpoint checkpoint(dir); },
               {"'model.norm.weight'", "is not in weight_map"});
}

TEST_F(BrokenFolder, TensorInTwoShards) {
  write_sharded(dir, config, weights, 2);
  // A third shard repeating one tensor, listed in the index through another tensor name.
  std::vector<NamedTensor> views = weights.views();
  write_safetensors(dir + "/extra.safetensors", {views[0], views[1]}, {}, false);
  edit_index(dir, [&](json& index) { index["weight_map"][views[1].name] = "extra.safetensors"; });
  expect_error([&] { Checkpoint checkpoint(dir); }, {dir, "is in two shards"});
}

TEST_F(BrokenFolder, IndexNotJsonOrEscapingTheFolder) {
  write_sharded(dir, config, weights, 2);
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
