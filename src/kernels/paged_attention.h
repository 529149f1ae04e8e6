// Attention over a paged KV cache (the layout of vLLM's PagedAttention): keys and values of many
// sequences live in fixed-size blocks of one shared store, and each sequence lists its blocks in
// a block table, so sequences grow and leave without moving anyone's memory.
//
//   one layer's store: keys, values [blocks, Hkv, block_size, D] (F32)
//   position p of a sequence: block table[p / block_size], slot p % block_size
//
// Query head h reads KV head h / (H / Hkv) (GQA), causally: a query at position p sees the
// sequence's positions 0 .. p.
#pragma once
#include <cstdint>
#include <span>

namespace bd {

struct PagedKV {
  float* keys = nullptr;    // [blocks, Hkv, block_size, D]
  float* values = nullptr;  // [blocks, Hkv, block_size, D]
  int64_t blocks = 0, kv_heads = 1, head_dim = 1, block_size = 1;
};

// One sequence's rows in a batched step: rows row0 .. row0+n-1 of the step hold its positions
// pos0 .. pos0+n-1; `table` lists the blocks of positions 0 .. pos0+n-1 (at least
// ceil((pos0+n) / block_size) entries).
struct PagedSequence {
  int64_t row0 = 0, n = 0, pos0 = 0;
  const int32_t* table = nullptr;
};

// Stores k_rows, v_rows[rows, Hkv, D] (this step's keys and values as the linear layers wrote
// them) at each sequence's positions. Throws bd::Error, before writing, for a block id outside
// the store.
void paged_kv_store(const PagedKV& kv, const float* k_rows, const float* v_rows,
                    std::span<const PagedSequence> sequences);

// Floats of scratch paged_attention_forward needs: one score row of the longest sequence per
// thread of the current pool.
int64_t paged_attention_scratch(std::span<const PagedSequence> sequences);

// out[rows, H, D] = softmax(q·kᵀ / sqrt(D), causal) · v for every row of every sequence, with
// q[rows, H, D] and keys and values read through the block tables. `scratch` holds
// paged_attention_scratch(sequences) floats. Multi-threaded over (sequence, head) pairs.
void paged_attention_forward(float* out, const float* q, const PagedKV& kv,
                             std::span<const PagedSequence> sequences, int64_t heads,
                             float* scratch);

}  // namespace bd
