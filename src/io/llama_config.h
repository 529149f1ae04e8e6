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

// Limits on what a config may ask for (docs/formats.md), checked before any size arithmetic: far
// above every published Llama (Llama 3.1 405B: 126 layers, hidden 16384, intermediate 53248,
// vocabulary 128256, 131072 positions), and small enough that every product of two of them fits
// in int64 and every tensor's row length and row count fit BLAS's int.
inline constexpr int64_t kMaxLayers = 4096;
inline constexpr int64_t kMaxDimension = int64_t(1) << 20;  // hidden, intermediate, heads·head_dim
inline constexpr int64_t kMaxVocab = int64_t(1) << 24;
inline constexpr int64_t kMaxPositions = int64_t(1) << 24;  // max_position_embeddings

// Checks what the engine relies on, for a parsed config or one built in code: sizes positive and
// within the limits above, heads divisible by kv heads, even head_dim, token ids in the
// vocabulary. Throws bd::Error "<source>: field '<name>' ...".
void check_llama_config(const LlamaConfig& config, const std::string& source);

// Parses config.json text; `source` names the file in error messages. Checks every field's type,
// then check_llama_config.
LlamaConfig parse_llama_config(const std::string& json_text, const std::string& source);
// Serialises to HF config.json text (architectures LlamaForCausalLM, model_type llama).
std::string llama_config_json(const LlamaConfig& config);

}  // namespace bd
