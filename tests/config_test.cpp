// config.json parsing and writing for the Llama family: published configs, defaults, rope
// scaling variants, round trips, and one clear error per bad field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/llama_config.h"
#include "test_util.h"

namespace bd {
namespace {

using nlohmann::json;
using test::expect_error;

// meta-llama/Llama-3.1-8B's published config.json.
const char kLlama31Config[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})";

// An older-style config (Llama-2 era): no num_key_value_heads, head_dim or rope_scaling.
const char kLlama2StyleConfig[] = R"({
  "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 11008,
  "max_position_embeddings": 4096, "model_type": "llama", "num_attention_heads": 32,
  "num_hidden_layers": 32, "rms_norm_eps": 1e-05, "rope_scaling": null,
  "tie_word_embeddings": false, "torch_dtype": "float16", "vocab_size": 32000})";

TEST(LlamaConfig, ParsesLlama31) {
  LlamaConfig c = parse_llama_config(kLlama31Config, "config.json");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::Llama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_id, 128001);  // the first of the list
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(LlamaConfig, AppliesDefaults) {
  LlamaConfig c = parse_llama_config(kLlama2StyleConfig, "config.json");
  EXPECT_EQ(c.num_key_value_heads, 32);  // no GQA unless stated
  EXPECT_EQ(c.head_dim, 128);            // hidden_size / num_attention_heads
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::None);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);

  LlamaConfig minimal = parse_llama_config(
      R"({"vocab_size": 10, "hidden_size": 12, "intermediate_size": 20, "num_hidden_layers": 1,
          "num_attention_heads": 3, "head_dim": 8, "bos_token_id": null, "eos_token_id": []})",
      "config.json");
  EXPECT_EQ(minimal.head_dim, 8);  // explicit, need not be hidden / heads
  EXPECT_EQ(minimal.num_key_value_heads, 3);
  EXPECT_DOUBLE_EQ(minimal.rms_norm_eps, 1e-6);
  EXPECT_EQ(minimal.max_position_embeddings, 2048);
  EXPECT_FALSE(minimal.tie_word_embeddings);
  EXPECT_EQ(minimal.bos_token_id, -1);
  EXPECT_EQ(minimal.eos_token_id, -1);
}

json base_json() {
  return json::parse(kLlama2StyleConfig);
}

TEST(LlamaConfig, ReadsEveryRopeScalingSpelling) {
  json config = base_json();
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  LlamaConfig linear = parse_llama_config(config.dump(), "config.json");
  EXPECT_EQ(linear.rope_scaling.type, RopeScaling::Type::Linear);
  EXPECT_DOUBLE_EQ(linear.rope_scaling.factor, 2.0);

  config["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4}};
  EXPECT_DOUBLE_EQ(parse_llama_config(config.dump(), "c").rope_scaling.factor, 4.0);

  config["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(parse_llama_config(config.dump(), "c").rope_scaling.type, RopeScaling::Type::None);
}

TEST(LlamaConfig, RoundTripsThroughJson) {
  std::vector<LlamaConfig> configs = {parse_llama_config(kLlama31Config, "a"),
                                      parse_llama_config(kLlama2StyleConfig, "b")};
  LlamaConfig linear = configs[1];
  linear.rope_scaling.type = RopeScaling::Type::Linear;
  linear.rope_scaling.factor = 3.5;
  linear.tie_word_embeddings = true;
  linear.head_dim = 64;
  linear.num_key_value_heads = 4;
  linear.bos_token_id = -1;
  linear.rms_norm_eps = 1.25e-6;
  configs.push_back(linear);
  for (const LlamaConfig& c : configs) {
    std::string text = llama_config_json(c);
    json written = json::parse(text);
    EXPECT_EQ(written["architectures"], json::array({"LlamaForCausalLM"}));
    EXPECT_EQ(written["model_type"], "llama");
    LlamaConfig back = parse_llama_config(text, "written");
    EXPECT_EQ(back.vocab_size, c.vocab_size);
    EXPECT_EQ(back.hidden_size, c.hidden_size);
    EXPECT_EQ(back.intermediate_size, c.intermediate_size);
    EXPECT_EQ(back.num_hidden_layers, c.num_hidden_layers);
    EXPECT_EQ(back.num_attention_heads, c.num_attention_heads);
    EXPECT_EQ(back.num_key_value_heads, c.num_key_value_heads);
    EXPECT_EQ(back.head_dim, c.head_dim);
    EXPECT_EQ(back.rms_norm_eps, c.rms_norm_eps);  // exact: JSON keeps 17 significant digits
    EXPECT_EQ(back.rope_theta, c.rope_theta);
    EXPECT_EQ(back.rope_scaling.type, c.rope_scaling.type);
    EXPECT_EQ(back.rope_scaling.factor, c.rope_scaling.factor);
    if (c.rope_scaling.type == RopeScaling::Type::Llama3) {
      EXPECT_EQ(back.rope_scaling.low_freq_factor, c.rope_scaling.low_freq_factor);
      EXPECT_EQ(back.rope_scaling.high_freq_factor, c.rope_scaling.high_freq_factor);
      EXPECT_EQ(back.rope_scaling.original_max_position_embeddings,
                c.rope_scaling.original_max_position_embeddings);
    }
    EXPECT_EQ(back.max_position_embeddings, c.max_position_embeddings);
    EXPECT_EQ(back.tie_word_embeddings, c.tie_word_embeddings);
    EXPECT_EQ(back.bos_token_id, c.bos_token_id);
    EXPECT_EQ(back.eos_token_id, c.eos_token_id);
    EXPECT_EQ(back.torch_dtype, c.torch_dtype);
  }
}

// One edit of a valid config per case, and the pieces its error must contain.
struct BadConfig {
  const char* label;
  json edit;  // merged into the valid config (null values remove the field)
  std::vector<std::string> message;
};

void PrintTo(const BadConfig& bad, std::ostream* out) {
  *out << bad.label;
}

class LlamaConfigRejects : public testing::TestWithParam<BadConfig> {};

TEST_P(LlamaConfigRejects, WithOneClearMessage) {
  json config = base_json();
  config.merge_patch(GetParam().edit);
  std::vector<std::string> pieces = GetParam().message;
  pieces.push_back("models/x/config.json: ");
  expect_error([&] { parse_llama_config(config.dump(), "models/x/config.json"); }, pieces);
}

const BadConfig kBadConfigs[] = {
    {"missing_vocab", {{"vocab_size", nullptr}}, {"'vocab_size'", "(missing)"}},
    {"negative_hidden",
     {{"hidden_size", -4096}},
     {"'hidden_size'", "an integer in [1, 1048576]", "-4096"}},
    {"zero_layers", {{"num_hidden_layers", 0}}, {"'num_hidden_layers'", "an integer in [1, 4096]"}},
    {"string_layers", {{"num_hidden_layers", "32"}}, {"'num_hidden_layers'", "\"32\""}},
    {"float_heads", {{"num_attention_heads", 32.5}}, {"'num_attention_heads'", "32.5"}},
    {"huge_size", {{"intermediate_size", 18446744073709551615ull}}, {"'intermediate_size'"}},
    {"gqa_not_dividing", {{"num_key_value_heads", 5}}, {"num_key_value_heads (5)"}},
    {"hidden_not_dividing", {{"num_attention_heads", 30}}, {"hidden_size (4096)", "head_dim"}},
    {"odd_head_dim", {{"head_dim", 127}}, {"head_dim (127)", "even"}},
    {"negative_eps", {{"rms_norm_eps", -1e-5}}, {"'rms_norm_eps'", "positive finite number"}},
    {"string_theta", {{"rope_theta", "1e4"}}, {"'rope_theta'", "positive finite number"}},
    {"zero_positions", {{"max_position_embeddings", 0}}, {"'max_position_embeddings'"}},
    {"string_tie", {{"tie_word_embeddings", "false"}}, {"'tie_word_embeddings'", "true or false"}},
    {"negative_bos", {{"bos_token_id", -1}}, {"'bos_token_id'", "token id"}},
    {"string_eos", {{"eos_token_id", json::array({"</s>"})}}, {"'eos_token_id'"}},
    {"eos_outside_vocab",
     {{"eos_token_id", 32000}},
     {"'eos_token_id' (32000)", "vocab_size 32000"}},
    {"rope_not_object", {{"rope_scaling", 8}}, {"'rope_scaling'"}},
    {"rope_unknown", {{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4}}}}, {"'yarn'"}},
    {"rope_no_type", {{"rope_scaling", {{"factor", 4}}}}, {"rope_scaling type ''"}},
    {"linear_no_factor", {{"rope_scaling", {{"type", "linear"}}}}, {"'rope_scaling.factor'"}},
    {"llama3_missing_field",
     {{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8}, {"high_freq_factor", 4}}}},
     {"'rope_scaling.low_freq_factor'", "(missing)"}},
    {"llama3_factors_reversed",
     {{"rope_scaling",
       {{"rope_type", "llama3"},
        {"factor", 8},
        {"low_freq_factor", 4},
        {"high_freq_factor", 1},
        {"original_max_position_embeddings", 8192}}}},
     {"high_freq_factor"}},
    {"other_architecture", {{"model_type", "gpt2"}}, {"model_type 'gpt2'"}},
    {"other_activation", {{"hidden_act", "gelu"}}, {"hidden_act 'gelu'"}},
    {"attention_bias", {{"attention_bias", true}}, {"attention_bias"}},
    {"sliding_window", {{"sliding_window", 4096}}, {"sliding_window"}},
};

INSTANTIATE_TEST_SUITE_P(BadConfigs, LlamaConfigRejects, testing::ValuesIn(kBadConfigs),
                         [](const testing::TestParamInfo<BadConfig>& info) {
                           return std::string(info.param.label);
                         });

TEST(LlamaConfig, RejectsTextThatIsNotAJsonObject) {
  expect_error([] { parse_llama_config("{\"vocab_size\": ", "m/config.json"); },
               {"m/config.json: ", "not valid JSON"});
  expect_error([] { parse_llama_config("[1, 2]", "m/config.json"); },
               {"m/config.json: ", "not a JSON object"});
  expect_error([] { parse_llama_config("", "m/config.json"); }, {"m/config.json: "});
}

}  // namespace
}  // namespace bd
