// The Llama model (Hugging Face semantics): weights as views, the inference forward with a KV
// cache, and the training forward/backward over full sequences. Both forwards run the same
// block function over the same kernels; they differ only in where activations are kept.
//
//   h = embed[tokens]
//   per layer: h += o(attention(rope(q(n1)), rope(k(n1)), v(n1)))    n1 = rmsnorm(h)·attn_norm
//              h += down(silu(gate(n2)) ⊙ up(n2))                       n2 = rmsnorm(h)·mlp_norm
//   logits = lm_head(rmsnorm(h)·final_norm)       (lm_head = embed when tie_word_embeddings)
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/llama_config.h"
#include "model/kv_cache.h"
#include "model/linear.h"
#include "model/llama_delta.h"

namespace bd {

class Checkpoint;
class LlamaParams;

// Linear::slot of layer l's projections is 7l + (0 q, 1 k, 2 v, 3 o, 4 gate, 5 up, 6 down); the
// head's is 7L (kLinearsPerLayer · layers).
inline constexpr int64_t kLinearsPerLayer = 7;

struct LayerWeights {
  TensorView attn_norm, mlp_norm;  // [C], always F32
  Linear q, k, v, o;               // [H·D, C], [Hkv·D, C], [Hkv·D, C], [C, H·D]
  Linear gate, up, down;           // [F, C], [F, C], [C, F]
};

struct LlamaWeights {
  LlamaConfig config;
  TensorView embed;       // [V, C]
  TensorView final_norm;  // [C], always F32
  Linear lm_head;         // [V, C]; views the embedding (and is named after it) when tied
  std::vector<LayerWeights> layers;
  std::vector<double> rope_inv_freq;  // [D/2], rope_scaling applied
  // F32 copies of norm weights stored as BF16/F16 (norm views point here); shared by copies.
  std::shared_ptr<const std::vector<float>> widened_norms;
  // The linears' copy in huge pages (copy_linears_for_decode), one mapping for all; shared by
  // copies of these weights.
  std::shared_ptr<const void> decode_copy;
};

// Decode steps (a server's, bitdelta generate's) stream every weight once per token: copies
// every BF16 linear (and the head) into one mapping of huge pages (core/huge_pages.h), where the
// streams read faster than from the checkpoint's page-cache pages, and gives those pages back to
// the page cache. Where this CPU prefers panels (kernels/matmul_panels.h, AVX2) the copy is re-laid
// into them and each Linear's `panels` points at its part (the backward still reads W from the
// checkpoint); elsewhere the copy keeps W's layout and each Linear's `weight` points at it. Packs
// on the threads. Returns the bytes copied: 0 when no linear is BF16.
int64_t copy_linears_for_decode(LlamaWeights& weights);

// One tensor of the model: HF name and shape.
struct TensorSpec {
  std::string name;
  Shape shape;
};
// Every tensor a checkpoint of this config holds, in model order (embedding, layers, final norm,
// then lm_head unless tied).
std::vector<TensorSpec> llama_tensor_specs(const LlamaConfig& config);

// "model.layers.<layer>.<suffix>", e.g. layer_tensor_name(0, "input_layernorm.weight").
std::string layer_tensor_name(int64_t layer, const char* suffix);

// Zero-copy views of a checkpoint's tensors (validated against its config; norms stored as
// BF16/F16 are widened once).
LlamaWeights weights_from_checkpoint(const Checkpoint& checkpoint);

// The same from any tensor source: find(name) returns the view or nullptr. `source` names the
// origin in error messages ("<source>: tensor '<name>' ...").
using TensorLookup = std::function<const TensorView*(const std::string& name)>;
LlamaWeights make_llama_weights(const LlamaConfig& config, const std::string& source,
                                const TensorLookup& find);

// One sequence's part of a batched inference step.
struct StepSequence {
  const int32_t* tokens = nullptr;    // n new tokens, at positions kv->pos .. kv->pos + n - 1
  int64_t n = 0;                      // prefill: n > 1, decode: n = 1
  KVSequence* kv = nullptr;           // its blocks must cover kv->pos + n positions
  const LlamaDelta* delta = nullptr;  // its adapter; nullptr: the base alone
  float* logits = nullptr;            // [V] of the last token, or [n, V] when all_logits
  bool all_logits = false;
  // Rows of one adapter up to which its signs take the quantized lookups: kSignGemvMaxTokens
  // (evaluation, held to the dense model's F32 sums), or generate_lookup_max_tokens() (generation).
  int64_t lookup_max_rows = kSignGemvMaxTokens;
};

// Inference, one step for many sequences (continuous batching): their rows are concatenated in
// the given order and every linear runs one base product over all rows plus one delta product
// per segment, a segment being each run of adjacent sequences with the same adapter (so put
// sequences of one adapter next to each other). Prefill and decode mix freely. Stores the new
// keys and values in the pool, advances each kv->pos by n and writes each sequence's logits.
// Multi-threaded over the OpenMP pool (bd::set_threads); allocates nothing once the scratch has
// grown to the step's size. Sets flush-to-zero / denormals-are-zero on the pool's threads
// (denormal products are ~100x slower and never matter here). Throws bd::Error, changing
// nothing, for a token outside the vocabulary, a position past the model's context, too few
// blocks, or a pool of another config.
void forward_step(const LlamaWeights& weights, KVBlockPool& pool,
                  std::span<const StepSequence> sequences, StepScratch& scratch);

// One sequence: runs n new tokens at positions cache.pos() .. cache.pos()+n-1 through
// forward_step, with `delta` (nullptr: the base). Writes logits[V] of the last token, or
// logits[n, V] of all n when all_logits. lookup_max_rows as in StepSequence.
void forward(const LlamaWeights& weights, KVCache& cache, const int32_t* tokens, int64_t n,
             float* logits, bool all_logits = false, const LlamaDelta* delta = nullptr,
             int64_t lookup_max_rows = kSignGemvMaxTokens);

// Activations of a training forward over B sequences of T tokens, in one allocation (llm.c
// style): everything the backward pass reads, and its scratch. rows = B·T, sequence-major.
// About rows·(4C + 3F + 2H·D + 2Hkv·D + H·T) floats per layer plus rows·V for the logits: the
// softmax rows (H·T per row) dominate for long sequences. Sized for `capacity` sequences; a
// batch of fewer (set_batch) reuses the same buffers, so a variable batch (DP-SGD's Poisson
// sampling) allocates nothing per step.
struct TrainActivations {
  TrainActivations(const LlamaConfig& config, int64_t B, int64_t T);

  // Runs the next forward with b ≤ capacity sequences of the same T. Throws bd::Error otherwise.
  void set_batch(int64_t b);
  int64_t capacity() const { return capacity_; }

  struct Layer {
    float* in;         // [rows, C] residual stream entering the layer
    float* attn_in;    // [rows, C] rmsnorm(in)·attn_norm
    float* attn_rstd;  // [rows]
    float* q;          // [rows, H·D] after RoPE
    float* k;          // [B, Hkv, T, D] after RoPE
    float* v;          // [B, Hkv, T, D]
    float* probs;      // [B, H, T, T] softmax rows
    float* att;        // [rows, H·D] attention output
    float* mid;        // [rows, C] residual stream after attention
    float* mlp_in;     // [rows, C] rmsnorm(mid)·mlp_norm
    float* mlp_rstd;   // [rows]
    float* gate;       // [rows, F]
    float* up;         // [rows, F]
    float* act;        // [rows, F] silu(gate)·up
  };

  LlamaConfig config;
  int64_t B, T;
  std::vector<float> memory;             // every buffer below points into it
  std::vector<int32_t> tokens, targets;  // [rows]
  std::vector<Layer> layers;
  float* final_in;    // [rows, C] residual stream after the last layer
  float* final_out;   // [rows, C] rmsnorm(final_in)·final_norm
  float* final_rstd;  // [rows]
  float* logits;      // [rows, V]; their gradient after backward()
  float* lse;         // [rows] log-sum-exp of each logits row
  float* k_new;       // [rows, Hkv·D] scratch: keys before the store into Layer::k
  float* v_new;       // [rows, Hkv·D]
  // Backward scratch.
  float *d_h, *d_x;              // [rows, C]
  float *d_q, *d_att;            // [rows, H·D]
  float *d_k, *d_v;              // [B, Hkv, T, D]
  float *d_k_new, *d_v_new;      // [rows, Hkv·D]
  float *d_gate, *d_up, *d_act;  // [rows, F]
  float* norm_weight;            // [C] a norm's weight with an adapter's delta added

  float loss = 0;       // of the last forward_train
  int64_t counted = 0;  // targets that counted in it

 private:
  int64_t capacity_;
};

// Training forward over tokens[B, T]: returns the mean cross-entropy of targets[B, T] (a
// target < 0 is ignored, e.g. padding), keeping every activation in `acts`. Runs the same block
// function and kernels as forward() (with all activations kept), and sets FTZ/DAZ likewise.
// With `delta`, every row runs through that adapter (one segment).
float forward_train(const LlamaWeights& weights, const int32_t* tokens, const int32_t* targets,
                    int64_t B, int64_t T, TrainActivations& acts,
                    const LlamaDelta* delta = nullptr);

// Called by backward for every linear layer with its input X[rows, I] and output gradient
// dY[rows, O] (rows = B·T, sequence-major), e.g. for per-example gradient norms (DP-SGD) or
// delta-scale gradients dL/dγ = Σ dY ⊙ (S·X); and for every RMSNorm with its input X[rows, C],
// inverse RMS [rows] and output gradient dY[rows, C] (its weight's gradient is
// Σ_rows dY ⊙ X · inv_rms). The dY buffers are scratch that backward reuses: copy what is kept.
struct LinearBackwardObserver {
  virtual ~LinearBackwardObserver() = default;
  virtual void on_linear(const std::string& weight_name, const float* X, const float* dY,
                         int64_t rows, int64_t in, int64_t out) = 0;
  virtual void on_norm(const std::string& /*weight_name*/, const float* /*X*/,
                       const float* /*inv_rms*/, const float* /*dY*/, int64_t /*rows*/,
                       int64_t /*dim*/) {}
};

// Backward of the last forward_train from a gradient of its logits that the caller wrote into
// acts.logits (dL/dlogits[rows, V], e.g. of a distillation loss; the buffer is used as is).
// Accumulates (+=) the parameter gradients into *grads (same layout as the parameters; zero it
// first for a fresh step). With grads == nullptr no parameter gradient is computed, only the
// observer sees every linear's (X, dY): the weights may then be frozen BF16/F16 views. `delta`
// must be the forward's: the input gradients then include the adapter (γ ⊙ S, exact deltas),
// and no parameter gradient may be asked for (the base is frozen under an adapter). Afterwards
// acts.d_h holds the gradient of the embedding's output [rows, C] (what the embedding's own
// gradient is made of) and acts.logits still holds dL/dlogits.
void backward_from_logits(const LlamaWeights& weights, TrainActivations& acts, LlamaParams* grads,
                          LinearBackwardObserver* observer = nullptr,
                          const LlamaDelta* delta = nullptr);

// Backward of the last forward_train's mean cross-entropy: its logits gradient, then
// backward_from_logits. Overwrites the logits in `acts` with their gradient, so run
// forward_train again before another backward.
void backward(const LlamaWeights& weights, TrainActivations& acts, LlamaParams* grads,
              LinearBackwardObserver* observer = nullptr);
inline void backward(const LlamaWeights& weights, TrainActivations& acts, LlamaParams& grads,
                     LinearBackwardObserver* observer = nullptr) {
  backward(weights, acts, &grads, observer);
}

}  // namespace bd
