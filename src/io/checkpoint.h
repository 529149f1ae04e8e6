// Hugging Face Llama checkpoint folders: config.json plus model.safetensors, or shards listed
// in model.safetensors.index.json. Tensors are zero-copy views into the mapped files.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/fingerprint.h"
#include "io/llama_config.h"
#include "io/safetensors.h"

namespace bd {

class Checkpoint {
 public:
  // Reads config.json and the safetensors (single file or shards). Every shard is opened once;
  // every index entry must exist in its shard, every shard tensor must be listed in the index,
  // and no tensor may appear in two shards. Throws bd::Error naming the file and problem.
  explicit Checkpoint(const std::string& dir);

  const LlamaConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  std::vector<std::string> tensor_names() const;          // sorted
  const TensorView* find(const std::string& name) const;  // nullptr if absent
  const TensorView& get(const std::string& name) const;   // throws "<dir>: no tensor '<name>'"
  std::vector<NamedTensor> tensors() const;               // sorted by name
  // __metadata__ of the safetensors file(s); for shards, the union (the first shard in
  // file-name order wins on a conflicting key).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The safetensors file(s) the tensors live in: model.safetensors, or the shards in file-name
  // order.
  std::vector<const SafetensorsFile*> files() const;
  // fingerprint_tensors() of all tensors. Reads every byte (SHA-256, ~2 GB/s per core) unless
  // the machine's fingerprint cache knows these files (io/fingerprint_cache.h), and remembers
  // what it computes there.
  std::string fingerprint() const;
  int64_t parameter_count() const;  // total elements of all tensors

 private:
  std::string dir_;
  LlamaConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> tensors_;  // views owned by files_
  std::map<std::string, std::string> metadata_;
};

// Checks that the tensors a Llama with this config needs exist with the right shapes and a
// float dtype: model.embed_tokens.weight [V, H]; per layer N model.layers.N.input_layernorm and
// post_attention_layernorm .weight [H], self_attn.q_proj [nh*hd, H], k_proj/v_proj [nkv*hd, H],
// o_proj [H, nh*hd], mlp.gate_proj/up_proj [I, H], mlp.down_proj [H, I]; model.norm.weight
// [H]; lm_head.weight [V, H] unless tie_word_embeddings. Also rejects layers beyond
// num_hidden_layers. One error naming the folder, the tensor and what config.json implies.
void validate_llama_tensors(const Checkpoint& checkpoint);

// Writes config.json, model.safetensors (metadata gets "format": "pt" unless given, as
// transformers requires) and, if tokenizer_json is non-empty, tokenizer.json into dir, each
// atomically. Refuses an existing non-empty dir unless overwrite; when overwriting, removes a
// stale model.safetensors.index.json and the shards it lists so the folder holds one model.
void save_checkpoint(const std::string& dir, const LlamaConfig& config,
                     const std::vector<NamedTensor>& tensors, const std::string& tokenizer_json,
                     const std::map<std::string, std::string>& metadata, bool overwrite);

}  // namespace bd
