// The Llama-family hyper-parameters of a Hugging Face config.json.
#pragma once
#include <cstdint>
#include <string>

namespace bd {

struct RopeScaling {
  enum class Type { None, Linear, Llama3 } type = Type::None;
  double factor = 1.0;                              // linear and llama3
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct LlamaConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // GQA; defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;  // -1: none
  int64_t eos_token_id = -1;
  std::string torch_dtype = "float32";  // informational; tensors carry their own dtype
};

// Parses config.json text; `source` names the file in error messages. Checks every
// field's type and range and that heads divide evenly (num_attention_heads % kv_heads).
LlamaConfig parse_llama_config(const std::string& json_text, const std::string& source);
// Serialises to HF config.json text (architectures LlamaForCausalLM, model_type llama).
std::string llama_config_json(const LlamaConfig& config);

}  // namespace bd
