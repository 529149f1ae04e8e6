// The key/value cache of inference, plus the scratch memory of the forward pass, so that
// decoding one token allocates nothing.
#pragma once
#include <cstdint>
#include <vector>

#include "io/llama_config.h"

namespace bd {

class KVCache {
 public:
  // Room for max_seq positions of every layer: keys and values [layers][Hkv, max_seq, D], F32.
  KVCache(const LlamaConfig& config, int64_t max_seq);

  int64_t max_seq() const { return max_seq_; }
  int64_t pos() const { return pos_; }  // positions filled so far
  void reset() { pos_ = 0; }
  // Marks n more positions as filled (called by forward once their keys and values are stored).
  void advance(int64_t n);

  int64_t layers() const { return layers_; }
  int64_t kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  float* keys(int64_t layer) { return keys_.data() + layer * layer_floats(); }  // [Hkv, max_seq, D]
  float* values(int64_t layer) { return values_.data() + layer * layer_floats(); }

  // At least `floats` floats of scratch, reused across calls (grows only for a larger request).
  float* scratch(size_t floats);

 private:
  int64_t layer_floats() const { return kv_heads_ * max_seq_ * head_dim_; }

  int64_t layers_, kv_heads_, head_dim_, max_seq_;
  int64_t pos_ = 0;
  std::vector<float> keys_, values_;
  std::vector<float> scratch_;
};

}  // namespace bd
