// One transformer block's forward pass, shared by inference (llama.cpp) and training
// (llama_train.cpp), so both run the very same kernels in the same order. They differ in where
// keys and values live (BlockAttention) and in which activations they keep (BlockBuffers).
#pragma once
#include <cstdint>

#include "model/llama.h"

namespace bd {

// Where one block reads and writes, for its rows (sequence-major). Inference points several of
// these at the same buffer (in = mid = out, attn_in = mlp_in, act = gate, no rstd); training
// gives each its own so backward can read them.
struct BlockBuffers {
  float* in;           // [rows, C] residual stream entering the block
  float* attn_in;      // [rows, C]
  float* attn_rstd;    // [rows] or nullptr
  float* q;            // [rows, H·D]
  float* k_new;        // [rows, Hkv·D] this call's keys
  float* v_new;        // [rows, Hkv·D] this call's values
  float* att;          // [rows, H·D]
  float* mid;          // [rows, C] residual stream after attention
  float* mlp_in;       // [rows, C]
  float* mlp_rstd;     // [rows] or nullptr
  float* gate;         // [rows, F]
  float* up;           // [rows, F]
  float* act;          // [rows, F]
  float* out;          // [rows, C] residual stream leaving the block
  float* norm_weight;  // [C] scratch: a segment's norm weight, base + delta
};

// How a block's attention reaches keys and values: training keeps a batch's in contiguous
// buffers (kernels/attention.h), inference in the paged KV cache (kernels/paged_attention.h).
class BlockAttention {
 public:
  virtual ~BlockAttention() = default;
  // Given this layer's q[rows, H·D], k_new and v_new[rows, Hkv·D] straight from the linear
  // layers: applies RoPE to q and k_new, stores k_new and v_new, writes att[rows, H·D].
  virtual void attend(int64_t layer, float* att, float* q, float* k_new, float* v_new) const = 0;
};

// Runs block `layer` over `rows` rows; `segments` give each row's adapter.
void block_forward(int64_t layer, const LlamaWeights& weights, int64_t rows, Segments segments,
                   const BlockBuffers& buffers, const BlockAttention& attention);

// out[rows, C] = rmsnorm(in) · (base + the segment's delta of norm `slot`), segment by segment.
// out may alias in. weight_scratch holds C floats.
void norm_forward(float* out, float* inv_rms, const float* in, const TensorView& base, int64_t slot,
                  int64_t rows, Segments segments, float* weight_scratch, int64_t C, float eps);

// The norm weight a segment's rows use: base, or base + delta written into weight_scratch[C].
const float* segment_norm_weight(const TensorView& base, int64_t slot, const LlamaDelta* delta,
                                 float* weight_scratch);

// Adds each segment's embedding delta to its rows of h[rows, C].
void embedding_deltas(float* h, const int32_t* tokens, Segments segments, int64_t C);

// Throws unless the segments lie in [0, rows) in ascending order without overlapping.
void check_segments(Segments segments, int64_t rows);

// Sets flush-to-zero and denormals-are-zero on every thread of the OpenMP pool.
void flush_denormals_on_pool();

}  // namespace bd
