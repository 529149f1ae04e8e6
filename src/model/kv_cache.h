// The key/value cache of inference, paged: one store of fixed-size blocks shared by every
// sequence (kernels/paged_attention.h has the layout), a free list, and per sequence a block
// table. A sequence takes blocks as it grows and gives them all back when it ends, so many
// sequences of different lengths share one allocation without fragmenting it.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "io/llama_config.h"
#include "kernels/paged_attention.h"
#include "model/llama_delta.h"

namespace bd {

inline constexpr int64_t kKVBlockSize = 16;  // positions per block

// One sequence's place in the cache: its blocks in position order, and the positions filled.
struct KVSequence {
  std::vector<int32_t> blocks;
  int64_t pos = 0;
};

class KVBlockPool {
 public:
  // Room for `blocks` blocks of block_size positions of every layer, F32. The memory is taken
  // from the system lazily: pages are committed as blocks are first written.
  KVBlockPool(const LlamaConfig& config, int64_t blocks, int64_t block_size = kKVBlockSize);

  int64_t blocks() const { return blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t free_blocks() const { return int64_t(free_.size()); }
  int64_t layers() const { return layers_; }
  int64_t kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t blocks_for(int64_t positions) const {
    return (positions + block_size_ - 1) / block_size_;
  }
  int64_t bytes_per_block() const { return 2 * layers_ * block_floats() * int64_t(sizeof(float)); }

  // Grows seq's block table to cover `positions` positions; false, taking nothing, when the free
  // list is too short.
  bool reserve(KVSequence& seq, int64_t positions);
  // Returns all of seq's blocks to the free list and empties it (position 0).
  void release(KVSequence& seq);

  PagedKV layer(int64_t l) const;

 private:
  int64_t block_floats() const { return kv_heads_ * block_size_ * head_dim_; }

  int64_t layers_, kv_heads_, head_dim_, blocks_, block_size_;
  std::unique_ptr<float[]> keys_, values_;  // [layers, blocks, Hkv, block_size, D]
  std::vector<int32_t> free_;               // block ids, taken from the back
};

// Scratch memory of forward_step, reused across calls so that a step allocates nothing once it
// has grown to the largest step seen.
struct StepScratch {
  std::vector<float> floats;             // activations
  std::vector<int32_t> tokens;           // [rows] every sequence's tokens, concatenated
  std::vector<int64_t> positions;        // [rows] each row's position in its sequence
  std::vector<RowSegment> segments;      // rows of each adapter
  std::vector<RowSegment> out_segments;  // the same over the rows whose logits are wanted
  std::vector<PagedSequence> paged;      // each sequence's rows and block table
};

// The cache of one sequence (generate, eval): a pool with blocks for max_seq positions, all
// reserved for it, and its scratch.
class KVCache {
 public:
  KVCache(const LlamaConfig& config, int64_t max_seq);

  int64_t max_seq() const { return max_seq_; }
  int64_t pos() const { return sequence_.pos; }
  void reset() { sequence_.pos = 0; }

  KVBlockPool& pool() { return pool_; }
  KVSequence& sequence() { return sequence_; }
  StepScratch& scratch() { return scratch_; }

 private:
  int64_t max_seq_;
  KVBlockPool pool_;
  KVSequence sequence_;
  StepScratch scratch_;
};

}  // namespace bd
