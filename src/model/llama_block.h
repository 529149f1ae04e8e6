// One transformer block's forward pass, shared by inference (llama.cpp) and training
// (llama_train.cpp), so both run the very same kernels in the same order.
#pragma once
#include <cstdint>

#include "kernels/attention.h"
#include "model/llama.h"

namespace bd {

// Where one block reads and writes, for rows = B·n (sequence-major). Inference points several of
// these at the same buffer (in = mid = out, attn_in = mlp_in, act = gate, no rstd); training
// gives each its own so backward can read them.
struct BlockBuffers {
  float* in;         // [rows, C] residual stream entering the block
  float* attn_in;    // [rows, C]
  float* attn_rstd;  // [rows] or nullptr
  float* q;          // [rows, H·D]
  float* k_new;      // [rows, Hkv·D] this call's keys, stored into k at pos0..
  float* v_new;      // [rows, Hkv·D]
  float* k;          // [B, Hkv, kv_capacity, D]
  float* v;          // [B, Hkv, kv_capacity, D]
  float* probs;      // see attention_forward
  bool keep_probs;
  float* att;       // [rows, H·D]
  float* mid;       // [rows, C] residual stream after attention
  float* mlp_in;    // [rows, C]
  float* mlp_rstd;  // [rows] or nullptr
  float* gate;      // [rows, F]
  float* up;        // [rows, F]
  float* act;       // [rows, F]
  float* out;       // [rows, C] residual stream leaving the block
};

void block_forward(const LayerWeights& layer, const LlamaWeights& weights,
                   const AttentionDims& dims, const BlockBuffers& buffers);

// Sets flush-to-zero and denormals-are-zero on every thread of the OpenMP pool.
void flush_denormals_on_pool();

}  // namespace bd
