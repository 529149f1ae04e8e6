// Causal scaled-dot-product attention with grouped KV heads (GQA): query head h reads KV head
// h / (H / Hkv). The queries are the n newest positions pos0 .. pos0+n-1 of each sequence and
// attend to key positions 0 .. their own. Keys and values live in a head-major store with room
// for kv_capacity positions, which is both the inference KV cache and the training activations.
#pragma once
#include <cstdint>

namespace bd {

struct AttentionDims {
  int64_t batch = 1;                         // B sequences
  int64_t n = 1;                             // query positions per sequence
  int64_t pos0 = 0;                          // position of the first query
  int64_t heads = 1;                         // H query heads
  int64_t kv_heads = 1;                      // Hkv, divides H
  int64_t head_dim = 1;                      // D
  int64_t kv_capacity = 1;                   // positions allocated per KV head, >= pos0 + n
  int64_t keys() const { return pos0 + n; }  // S: positions the last query sees
};

// Stores rows[B, n, Hkv, D] (this call's keys or values, as the linear layer wrote them) into
// kv[B, Hkv, kv_capacity, D] at positions pos0 .. pos0+n-1.
void kv_store(float* kv, const float* rows, const AttentionDims& dims);
// The reverse copy (for the backward pass): rows[B, n, Hkv, D] = kv[B, Hkv, pos0 + t, D].
void kv_load(float* rows, const float* kv, const AttentionDims& dims);

// out[B, n, H, D] = softmax(q·kᵀ / sqrt(D), causal) · v, with q[B, n, H, D] and
// k, v[B, Hkv, kv_capacity, D].
// keep_probs: probs[B, H, n, S] receives every softmax row (row t: its first pos0+t+1 entries,
//   then zeros),
//   as the backward pass needs them;
// otherwise probs[B, H, kv_capacity] is scratch space, reused from one query row to the next.
void attention_forward(float* out, float* probs, const float* q, const float* k, const float* v,
                       const AttentionDims& dims, bool keep_probs);

// Given dout[B, n, H, D] and the forward's q, k, v and kept probs[B, H, n, S], overwrites
// dq[B, n, H, D] and the first S positions of dk, dv[B, Hkv, kv_capacity, D].
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* probs,
                        const AttentionDims& dims);

}  // namespace bd
