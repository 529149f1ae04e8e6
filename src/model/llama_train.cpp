// Training forward (keeps activations) and the hand-written backward pass.
#include <algorithm>
#include <utility>

#include "core/error.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "model/llama.h"
#include "model/llama_block.h"
#include "model/llama_params.h"

namespace bd {

namespace {

AttentionDims train_dims(const LlamaConfig& c, int64_t B, int64_t T) {
  return AttentionDims{.batch = B,
                       .n = T,
                       .pos0 = 0,
                       .heads = c.num_attention_heads,
                       .kv_heads = c.num_key_value_heads,
                       .head_dim = c.head_dim,
                       .kv_capacity = T};
}

bool same_shape(const LlamaConfig& a, const LlamaConfig& b) {
  return a.vocab_size == b.vocab_size && a.hidden_size == b.hidden_size &&
         a.intermediate_size == b.intermediate_size && a.num_hidden_layers == b.num_hidden_layers &&
         a.num_attention_heads == b.num_attention_heads &&
         a.num_key_value_heads == b.num_key_value_heads && a.head_dim == b.head_dim &&
         a.tie_word_embeddings == b.tie_word_embeddings;
}

// Gradient buffers are the F32 views of a LlamaParams that the caller handed us as mutable
// (null for an empty view: no gradient wanted).
float* writable(const TensorView& view) {
  return const_cast<float*>(view.as<float>());
}

// Attention of a training batch: every sequence from position 0, keys and values (and the softmax
// rows, for backward) kept per layer in the activations.
class BatchAttention final : public BlockAttention {
 public:
  BatchAttention(const LlamaWeights& weights, TrainActivations& acts)
      : weights_(weights), acts_(acts), dims_(train_dims(weights.config, acts.B, acts.T)) {}

  void attend(int64_t layer, float* att, float* q, float* k_new, float* v_new) const override {
    const TrainActivations::Layer& a = acts_.layers[size_t(layer)];
    const double* inv_freq = weights_.rope_inv_freq.data();
    rope_forward(q, inv_freq, dims_.batch, dims_.n, dims_.heads, dims_.head_dim, 0);
    rope_forward(k_new, inv_freq, dims_.batch, dims_.n, dims_.kv_heads, dims_.head_dim, 0);
    kv_store(a.k, k_new, dims_);
    kv_store(a.v, v_new, dims_);
    attention_forward(att, a.probs, q, a.k, a.v, dims_, /*keep_probs=*/true);
  }

 private:
  const LlamaWeights& weights_;
  TrainActivations& acts_;
  AttentionDims dims_;
};

// The training rows all run with one adapter, or none.
std::vector<RowSegment> one_segment(int64_t rows, const LlamaDelta* delta) {
  if (!delta) return {};
  return {RowSegment{0, rows, delta}};
}

}  // namespace

TrainActivations::TrainActivations(const LlamaConfig& c, int64_t batch, int64_t seq_len)
    : config(c), B(batch), T(seq_len), capacity_(batch) {
  check_llama_config(c, "model config");
  if (B <= 0 || T <= 0) fail("training batch must be positive, got B=", B, " T=", T);
  const int64_t rows = B * T, C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const int64_t H = c.num_attention_heads, L = c.num_hidden_layers;
  const int64_t q_dim = H * c.head_dim, kv_dim = c.num_key_value_heads * c.head_dim;
  const int64_t per_layer = rows * (4 * C + 2 + 2 * q_dim + 2 * kv_dim + H * T + 3 * F);
  const int64_t shared = rows * (4 * C + 2 + V + 6 * kv_dim + 2 * q_dim + 3 * F) + C;
  memory.assign(size_t(L * per_layer + shared), 0.0f);
  float* next = memory.data();
  auto take = [&](int64_t count) { return std::exchange(next, next + count); };
  layers.resize(size_t(L));
  for (Layer& layer : layers) {
    layer = Layer{.in = take(rows * C),
                  .attn_in = take(rows * C),
                  .attn_rstd = take(rows),
                  .q = take(rows * q_dim),
                  .k = take(rows * kv_dim),
                  .v = take(rows * kv_dim),
                  .probs = take(rows * H * T),
                  .att = take(rows * q_dim),
                  .mid = take(rows * C),
                  .mlp_in = take(rows * C),
                  .mlp_rstd = take(rows),
                  .gate = take(rows * F),
                  .up = take(rows * F),
                  .act = take(rows * F)};
  }
  final_in = take(rows * C);
  final_out = take(rows * C);
  final_rstd = take(rows);
  logits = take(rows * V);
  lse = take(rows);
  k_new = take(rows * kv_dim);
  v_new = take(rows * kv_dim);
  d_h = take(rows * C);
  d_x = take(rows * C);
  d_q = take(rows * q_dim);
  d_att = take(rows * q_dim);
  d_k = take(rows * kv_dim);
  d_v = take(rows * kv_dim);
  d_k_new = take(rows * kv_dim);
  d_v_new = take(rows * kv_dim);
  d_gate = take(rows * F);
  d_up = take(rows * F);
  d_act = take(rows * F);
  norm_weight = take(C);
  tokens.resize(size_t(rows));
  targets.resize(size_t(rows));
}

// Every buffer is laid out with the sequence (or row) index outermost, so the first b sequences'
// parts are the buffers' prefixes: a smaller batch runs in place.
void TrainActivations::set_batch(int64_t b) {
  if (b < 1 || b > capacity_)
    fail("training activations hold up to ", capacity_, " sequences, asked for ", b);
  B = b;
}

float forward_train(const LlamaWeights& weights, const int32_t* tokens, const int32_t* targets,
                    int64_t B, int64_t T, TrainActivations& acts, const LlamaDelta* delta) {
  const LlamaConfig& c = weights.config;
  if (acts.B != B || acts.T != T || !same_shape(acts.config, c))
    fail("forward_train: activations were sized for another batch or model (B=", acts.B,
         " T=", acts.T, ", asked B=", B, " T=", T, ")");
  flush_denormals_on_pool();
  const int64_t rows = B * T, C = c.hidden_size;
  std::copy_n(tokens, rows, acts.tokens.data());
  std::copy_n(targets, rows, acts.targets.data());

  const std::vector<RowSegment> segments = one_segment(rows, delta);
  embedding_forward(acts.layers[0].in, tokens, weights.embed, rows);
  embedding_deltas(acts.layers[0].in, tokens, segments, C);
  const BatchAttention attention(weights, acts);
  for (size_t l = 0; l < acts.layers.size(); ++l) {
    const TrainActivations::Layer& a = acts.layers[l];
    const BlockBuffers buffers{
        .in = a.in,
        .attn_in = a.attn_in,
        .attn_rstd = a.attn_rstd,
        .q = a.q,
        .k_new = acts.k_new,
        .v_new = acts.v_new,
        .att = a.att,
        .mid = a.mid,
        .mlp_in = a.mlp_in,
        .mlp_rstd = a.mlp_rstd,
        .gate = a.gate,
        .up = a.up,
        .act = a.act,
        .out = l + 1 < acts.layers.size() ? acts.layers[l + 1].in : acts.final_in,
        .norm_weight = acts.norm_weight};
    block_forward(int64_t(l), weights, rows, segments, buffers, attention);
  }
  norm_forward(acts.final_out, acts.final_rstd, acts.final_in, weights.final_norm,
               final_norm_slot(c.num_hidden_layers), rows, segments, acts.norm_weight, C,
               float(c.rms_norm_eps));
  linear_forward(acts.logits, acts.final_out, weights.lm_head, rows, segments);
  acts.loss =
      cross_entropy_forward(acts.lse, &acts.counted, acts.logits, targets, rows, c.vocab_size);
  return acts.loss;
}

void backward(const LlamaWeights& weights, TrainActivations& acts, LlamaParams* grads,
              LinearBackwardObserver* observer) {
  const int64_t rows = acts.B * acts.T;
  const float scale = acts.counted ? 1.0f / float(acts.counted) : 0.0f;
  // The logits buffer becomes its own gradient.
  cross_entropy_backward(acts.logits, acts.logits, acts.lse, acts.targets.data(), rows,
                         weights.config.vocab_size, scale);
  backward_from_logits(weights, acts, grads, observer);
}

void backward_from_logits(const LlamaWeights& weights, TrainActivations& acts, LlamaParams* grads,
                          LinearBackwardObserver* observer, const LlamaDelta* delta) {
  const LlamaConfig& c = weights.config;
  if ((grads && !same_shape(grads->config(), c)) || !same_shape(acts.config, c))
    fail("backward: gradients or activations were made for another model config");
  if (grads && delta)
    fail("backward: parameter gradients under an adapter are not supported (the base is frozen)");
  flush_denormals_on_pool();
  const int64_t rows = acts.B * acts.T, C = c.hidden_size;
  // Views of the gradient buffer, same layout as the weights; without grads every view is empty
  // and writable() gives null, which the kernels read as "no parameter gradient".
  LlamaWeights g;
  if (grads)
    g = grads->weights();
  else
    g.layers.resize(size_t(c.num_hidden_layers));
  const AttentionDims dims = train_dims(c, acts.B, acts.T);
  const double* inv_freq = weights.rope_inv_freq.data();
  const std::vector<RowSegment> segments = one_segment(rows, delta);
  // A norm's weight as the forward used it: base, or base + the adapter's delta.
  auto norm_weight = [&](const TensorView& base, int64_t slot) {
    return segment_norm_weight(base, slot, delta, acts.norm_weight);
  };

  // dY → dX (+)= dY·W, dW += dYᵀ·X, and the observer sees (X, dY).
  auto linear_grad = [&](float* dx, const float* dy, const float* x, const Linear& linear,
                         const Linear& grad, bool accumulate_dx) {
    if (observer)
      observer->on_linear(linear.name, x, dy, rows, linear.in_features(), linear.out_features());
    linear_backward(dx, writable(grad.weight), dy, x, linear, rows, segments, accumulate_dx);
  };
  // d_h (+)= ∂L/∂x of out = rmsnorm(x)·w given dy = ∂L/∂out, and the weight's gradient.
  auto norm_grad = [&](const std::string& name, const float* dy, const float* x,
                       const TensorView& weight, const TensorView& grad, int64_t slot,
                       const float* inv_rms) {
    if (observer) observer->on_norm(name, x, inv_rms, dy, rows, C);
    rmsnorm_backward(acts.d_h, writable(grad), dy, x, norm_weight(weight, slot), inv_rms, rows, C);
  };

  // Logits → final norm.
  linear_grad(acts.d_x, acts.logits, acts.final_out, weights.lm_head, g.lm_head, false);
  std::fill_n(acts.d_h, rows * C, 0.0f);
  norm_grad("model.norm.weight", acts.d_x, acts.final_in, weights.final_norm, g.final_norm,
            final_norm_slot(c.num_hidden_layers), acts.final_rstd);

  // d_h holds ∂L/∂(residual stream) and walks back through the layers; each residual branch
  // adds its input gradient into it.
  for (int64_t l = c.num_hidden_layers - 1; l >= 0; --l) {
    const LayerWeights& w = weights.layers[size_t(l)];
    const LayerWeights& gw = g.layers[size_t(l)];
    const TrainActivations::Layer& a = acts.layers[size_t(l)];

    // out = mid + down(silu(gate(mlp_in)) ⊙ up(mlp_in))
    linear_grad(acts.d_act, acts.d_h, a.act, w.down, gw.down, false);
    swiglu_backward(acts.d_gate, acts.d_up, acts.d_act, a.gate, a.up, rows * c.intermediate_size);
    linear_grad(acts.d_x, acts.d_gate, a.mlp_in, w.gate, gw.gate, false);
    linear_grad(acts.d_x, acts.d_up, a.mlp_in, w.up, gw.up, true);
    norm_grad(layer_tensor_name(l, "post_attention_layernorm.weight"), acts.d_x, a.mid, w.mlp_norm,
              gw.mlp_norm, mlp_norm_slot(l), a.mlp_rstd);

    // mid = in + o(attention(rope(q(attn_in)), rope(k(attn_in)), v(attn_in)))
    linear_grad(acts.d_att, acts.d_h, a.att, w.o, gw.o, false);
    attention_backward(acts.d_q, acts.d_k, acts.d_v, acts.d_att, a.q, a.k, a.v, a.probs, dims);
    kv_load(acts.d_k_new, acts.d_k, dims);
    kv_load(acts.d_v_new, acts.d_v, dims);
    rope_backward(acts.d_q, inv_freq, dims.batch, dims.n, dims.heads, dims.head_dim, 0);
    rope_backward(acts.d_k_new, inv_freq, dims.batch, dims.n, dims.kv_heads, dims.head_dim, 0);
    linear_grad(acts.d_x, acts.d_q, a.attn_in, w.q, gw.q, false);
    linear_grad(acts.d_x, acts.d_k_new, a.attn_in, w.k, gw.k, true);
    linear_grad(acts.d_x, acts.d_v_new, a.attn_in, w.v, gw.v, true);
    norm_grad(layer_tensor_name(l, "input_layernorm.weight"), acts.d_x, a.in, w.attn_norm,
              gw.attn_norm, attn_norm_slot(l), a.attn_rstd);
  }
  if (grads) embedding_backward(writable(g.embed), acts.d_h, acts.tokens.data(), rows, C);
}

}  // namespace bd
