#include "model/kv_cache.h"

#include "core/error.h"

namespace bd {

KVCache::KVCache(const LlamaConfig& config, int64_t max_seq)
    : layers_(config.num_hidden_layers),
      kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      max_seq_(max_seq) {
  if (max_seq <= 0) fail("KV cache: max_seq must be positive, got ", max_seq);
  keys_.resize(size_t(layers_ * layer_floats()));
  values_.resize(keys_.size());
}

void KVCache::advance(int64_t n) {
  if (n < 0 || pos_ + n > max_seq_)
    fail("KV cache: cannot advance by ", n, " from position ", pos_, " (capacity ", max_seq_, ")");
  pos_ += n;
}

float* KVCache::scratch(size_t floats) {
  if (scratch_.size() < floats) scratch_.resize(floats);
  return scratch_.data();
}

}  // namespace bd
