// Small random base / fine-tune checkpoint pairs for the compression tests: shapes that are not
// multiples of 8 (the packed rows end inside a byte), any float dtype, and a fine-tune that
// changes every block linear (with some exact-zero deltas), one norm, and optionally the
// embeddings, leaving the rest equal to the base.
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/checkpoint.h"
#include "model/byte_tokenizer.h"
#include "model/llama_params.h"

namespace bd::test {

// hidden 20 and intermediate 36: inputs of 20 and 36 columns, 4 bits of padding per row.
inline LlamaConfig small_llama_config() {
  LlamaConfig c;
  c.vocab_size = 258;
  c.hidden_size = 20;
  c.intermediate_size = 36;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 6;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = false;
  c.bos_token_id = kByteBosId;
  return c;
}

struct PairSpec {
  LlamaConfig config = small_llama_config();
  DType dtype = DType::F32;
  bool change_embeddings = false;
  double delta_std = 0.004;  // fine-tune noise relative to weights of std 0.02
  uint64_t seed = 1;
  std::map<std::string, std::string> finetune_metadata;
};

// Saves params (F32 values) in `dtype` as an HF folder with the byte tokenizer.
inline void save_params(const std::string& dir, const LlamaParams& params, DType dtype,
                        const std::map<std::string, std::string>& metadata) {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<NamedTensor> tensors;
  for (const NamedTensor& tensor : params.named_tensors()) {
    storage.emplace_back(size_t(tensor.view.numel()) * dtype_size(dtype));
    from_f32(dtype, tensor.view.as<float>(), storage.back().data(), size_t(tensor.view.numel()));
    tensors.push_back({tensor.name, TensorView{dtype, tensor.view.shape, storage.back().data()}});
  }
  LlamaConfig config = params.config();
  config.torch_dtype = dtype == DType::BF16  ? "bfloat16"
                       : dtype == DType::F16 ? "float16"
                                             : "float32";
  save_checkpoint(dir, config, tensors, byte_tokenizer_json(), metadata, false);
}

inline bool is_block_linear(const std::string& name) {
  for (const char* part :
       {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
    if (name.find(part) != std::string::npos) return true;
  return false;
}

// Writes base_dir and finetune_dir. The fine-tune: every block linear gets N(0, delta_std²)
// noise except every 7th element (δ = 0 exactly, so its sign is +1), layer 0's input norm is
// scaled by 1.01, the embeddings get noise when asked; everything else is the base.
inline void write_checkpoint_pair(const std::string& base_dir, const std::string& finetune_dir,
                                  const PairSpec& spec) {
  LlamaParams base(spec.config);
  base.init_random(spec.seed);
  LlamaParams tuned = base;
  std::mt19937_64 rng(spec.seed + 100);
  std::normal_distribution<float> noise(0.0f, float(spec.delta_std));
  for (const ParamSlice& slice : tuned.slices()) {
    float* values = tuned.data() + slice.offset;
    if (is_block_linear(slice.name)) {
      for (size_t i = 0; i < slice.numel; ++i)
        if (i % 7 != 3) values[i] += noise(rng);
    } else if (slice.name == "model.layers.0.input_layernorm.weight") {
      for (size_t i = 0; i < slice.numel; ++i) values[i] *= 1.01f;
    } else if (slice.name == "model.embed_tokens.weight" && spec.change_embeddings) {
      for (size_t i = 0; i < slice.numel; ++i) values[i] += noise(rng);
    }
  }
  save_params(base_dir, base, spec.dtype, {});
  save_params(finetune_dir, tuned, spec.dtype, spec.finetune_metadata);
}

}  // namespace bd::test
