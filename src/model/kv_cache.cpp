#include "model/kv_cache.h"

#include "core/error.h"

namespace bd {

KVBlockPool::KVBlockPool(const LlamaConfig& config, int64_t blocks, int64_t block_size)
    : layers_(config.num_hidden_layers),
      kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      blocks_(blocks),
      block_size_(block_size) {
  check_llama_config(config, "KV cache");
  if (blocks <= 0 || blocks > (int64_t(1) << 31) - 1)
    fail("KV cache: the number of blocks must be in [1, 2^31), got ", blocks);
  if (block_size <= 0 || block_size > 4096)
    fail("KV cache: block size must be in [1, 4096], got ", block_size);
  const double bytes = 2.0 * double(layers_) * double(blocks) * double(block_floats()) * 4.0;
  if (bytes > double(int64_t(1) << 46))
    fail("KV cache: ", blocks, " blocks would take ", bytes / double(1 << 30), " GiB");
  // new float[] leaves the memory untouched: the OS commits pages as blocks are written.
  const size_t floats = size_t(layers_ * blocks * block_floats());
  keys_.reset(new float[floats]);
  values_.reset(new float[floats]);
  free_.reserve(size_t(blocks));
  for (int64_t b = blocks - 1; b >= 0; --b) free_.push_back(int32_t(b));  // block 0 first
}

bool KVBlockPool::reserve(KVSequence& seq, int64_t positions) {
  const int64_t needed = blocks_for(positions) - int64_t(seq.blocks.size());
  if (needed <= 0) return true;
  if (needed > free_blocks()) return false;
  for (int64_t i = 0; i < needed; ++i) {
    seq.blocks.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KVBlockPool::release(KVSequence& seq) {
  for (auto it = seq.blocks.rbegin(); it != seq.blocks.rend(); ++it) free_.push_back(*it);
  seq.blocks.clear();
  seq.pos = 0;
}

PagedKV KVBlockPool::layer(int64_t l) const {
  const int64_t offset = l * blocks_ * block_floats();
  return PagedKV{.keys = keys_.get() + offset,
                 .values = values_.get() + offset,
                 .blocks = blocks_,
                 .kv_heads = kv_heads_,
                 .head_dim = head_dim_,
                 .block_size = block_size_};
}

KVCache::KVCache(const LlamaConfig& config, int64_t max_seq)
    : max_seq_(max_seq),
      pool_(config, max_seq > 0 ? (max_seq + kKVBlockSize - 1) / kKVBlockSize : 1) {
  if (max_seq <= 0) fail("KV cache: max_seq must be positive, got ", max_seq);
  pool_.reserve(sequence_, max_seq);
}

}  // namespace bd
