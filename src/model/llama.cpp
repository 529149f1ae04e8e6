#include "model/llama.h"

#include <algorithm>
#include <map>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "core/error.h"
#include "io/checkpoint.h"
#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "model/llama_block.h"

namespace bd {

namespace {

std::string layer_name(int64_t layer, const char* suffix) {
  return cat("model.layers.", layer, ".", suffix);
}

std::vector<double> rope_frequencies(const LlamaConfig& c) {
  std::vector<double> inv_freq = rope_inv_freq(c.head_dim, c.rope_theta);
  const RopeScaling& s = c.rope_scaling;
  switch (s.type) {
    case RopeScaling::Type::None:
      break;
    case RopeScaling::Type::Linear:
      rope_scale_linear(inv_freq, s.factor);
      break;
    case RopeScaling::Type::Llama3:
      rope_scale_llama3(inv_freq, s.factor, s.low_freq_factor, s.high_freq_factor,
                        double(s.original_max_position_embeddings));
      break;
  }
  return inv_freq;
}

}  // namespace

std::vector<TensorSpec> llama_tensor_specs(const LlamaConfig& c) {
  const int64_t C = c.hidden_size, F = c.intermediate_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  std::vector<TensorSpec> specs = {{"model.embed_tokens.weight", {c.vocab_size, C}}};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    specs.push_back({layer_name(l, "input_layernorm.weight"), {C}});
    specs.push_back({layer_name(l, "self_attn.q_proj.weight"), {q_dim, C}});
    specs.push_back({layer_name(l, "self_attn.k_proj.weight"), {kv_dim, C}});
    specs.push_back({layer_name(l, "self_attn.v_proj.weight"), {kv_dim, C}});
    specs.push_back({layer_name(l, "self_attn.o_proj.weight"), {C, q_dim}});
    specs.push_back({layer_name(l, "post_attention_layernorm.weight"), {C}});
    specs.push_back({layer_name(l, "mlp.gate_proj.weight"), {F, C}});
    specs.push_back({layer_name(l, "mlp.up_proj.weight"), {F, C}});
    specs.push_back({layer_name(l, "mlp.down_proj.weight"), {C, F}});
  }
  specs.push_back({"model.norm.weight", {C}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, C}});
  return specs;
}

LlamaWeights make_llama_weights(const LlamaConfig& config, const std::string& source,
                                const TensorLookup& find) {
  check_llama_config(config, source);
  LlamaWeights w;
  w.config = config;
  w.rope_inv_freq = rope_frequencies(config);
  std::map<std::string, TensorView> views;
  for (const TensorSpec& spec : llama_tensor_specs(config)) {
    const TensorView* view = find(spec.name);
    if (!view) fail(source, ": missing tensor ", quote_bytes(spec.name));
    if (!is_float(view->dtype))
      fail(source, ": tensor ", quote_bytes(spec.name), " has dtype ", dtype_name(view->dtype),
           ", expected F32, BF16 or F16");
    if (view->shape != spec.shape)
      fail(source, ": tensor ", quote_bytes(spec.name), " has shape ", shape_str(view->shape),
           ", config implies ", shape_str(spec.shape));
    views[spec.name] = *view;
  }
  // Norm weights are read as F32 by the kernels: widen the ones stored as BF16/F16, once.
  auto widened = std::make_shared<std::vector<float>>();
  std::vector<std::string> to_widen;
  for (const auto& [name, view] : views)
    if (view.shape.size() == 1 && view.dtype != DType::F32) to_widen.push_back(name);
  widened->resize(to_widen.size() * size_t(config.hidden_size));
  for (size_t i = 0; i < to_widen.size(); ++i) {
    TensorView& view = views[to_widen[i]];
    float* dst = widened->data() + i * size_t(config.hidden_size);
    to_f32(view.dtype, view.data, dst, size_t(config.hidden_size));
    view = TensorView{DType::F32, view.shape, dst};
  }
  w.widened_norms = widened;

  auto linear = [&](const std::string& name) { return Linear{name, views.at(name)}; };
  w.embed = views.at("model.embed_tokens.weight");
  w.final_norm = views.at("model.norm.weight");
  w.lm_head =
      config.tie_word_embeddings ? linear("model.embed_tokens.weight") : linear("lm_head.weight");
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    LayerWeights layer;
    layer.attn_norm = views.at(layer_name(l, "input_layernorm.weight"));
    layer.mlp_norm = views.at(layer_name(l, "post_attention_layernorm.weight"));
    layer.q = linear(layer_name(l, "self_attn.q_proj.weight"));
    layer.k = linear(layer_name(l, "self_attn.k_proj.weight"));
    layer.v = linear(layer_name(l, "self_attn.v_proj.weight"));
    layer.o = linear(layer_name(l, "self_attn.o_proj.weight"));
    layer.gate = linear(layer_name(l, "mlp.gate_proj.weight"));
    layer.up = linear(layer_name(l, "mlp.up_proj.weight"));
    layer.down = linear(layer_name(l, "mlp.down_proj.weight"));
    w.layers.push_back(std::move(layer));
  }
  return w;
}

LlamaWeights weights_from_checkpoint(const Checkpoint& checkpoint) {
  validate_llama_tensors(checkpoint);
  return make_llama_weights(checkpoint.config(), checkpoint.dir(),
                            [&](const std::string& name) { return checkpoint.find(name); });
}

void flush_denormals_on_pool() {
#if defined(__x86_64__) || defined(__i386__)
#pragma omp parallel
  _mm_setcsr(_mm_getcsr() | 0x8040);  // FTZ (bit 15) | DAZ (bit 6)
#endif
}

void block_forward(const LayerWeights& w, const LlamaWeights& weights, const AttentionDims& d,
                   const BlockBuffers& b) {
  const LlamaConfig& c = weights.config;
  const int64_t rows = d.batch * d.n, C = c.hidden_size;
  const float eps = float(c.rms_norm_eps);
  const double* inv_freq = weights.rope_inv_freq.data();

  rmsnorm_forward(b.attn_in, b.attn_rstd, b.in, w.attn_norm.as<float>(), rows, C, eps);
  linear_forward(b.q, b.attn_in, w.q, rows);
  linear_forward(b.k_new, b.attn_in, w.k, rows);
  linear_forward(b.v_new, b.attn_in, w.v, rows);
  rope_forward(b.q, inv_freq, d.batch, d.n, d.heads, d.head_dim, d.pos0);
  rope_forward(b.k_new, inv_freq, d.batch, d.n, d.kv_heads, d.head_dim, d.pos0);
  kv_store(b.k, b.k_new, d);
  kv_store(b.v, b.v_new, d);
  attention_forward(b.att, b.probs, b.q, b.k, b.v, d, b.keep_probs);
  if (b.mid != b.in) std::copy_n(b.in, rows * C, b.mid);
  linear_forward(b.mid, b.att, w.o, rows, /*accumulate=*/true);  // residual

  rmsnorm_forward(b.mlp_in, b.mlp_rstd, b.mid, w.mlp_norm.as<float>(), rows, C, eps);
  linear_forward(b.gate, b.mlp_in, w.gate, rows);
  linear_forward(b.up, b.mlp_in, w.up, rows);
  swiglu_forward(b.act, b.gate, b.up, rows * c.intermediate_size);
  if (b.out != b.mid) std::copy_n(b.mid, rows * C, b.out);
  linear_forward(b.out, b.act, w.down, rows, /*accumulate=*/true);  // residual
}

void forward(const LlamaWeights& weights, KVCache& cache, const int32_t* tokens, int64_t n,
             float* logits, bool all_logits) {
  const LlamaConfig& c = weights.config;
  if (cache.layers() != c.num_hidden_layers || cache.kv_heads() != c.num_key_value_heads ||
      cache.head_dim() != c.head_dim)
    fail("forward: the KV cache was made for another model config");
  if (n <= 0) fail("forward: needs at least one token, got ", n);
  if (cache.pos() + n > cache.max_seq())
    fail("forward: ", n, " tokens at position ", cache.pos(), " exceed the context of ",
         cache.max_seq(), " positions");
  flush_denormals_on_pool();

  const int64_t C = c.hidden_size, F = c.intermediate_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  const size_t floats = size_t(n * (2 * C + 2 * q_dim + 2 * kv_dim + 2 * F) +
                               c.num_attention_heads * cache.max_seq());
  float* next = cache.scratch(floats);
  auto take = [&](int64_t count) { return std::exchange(next, next + count); };
  float* h = take(n * C);       // residual stream
  float* normed = take(n * C);  // rmsnorm outputs
  float* q = take(n * q_dim);
  float* att = take(n * q_dim);
  float* k_new = take(n * kv_dim);
  float* v_new = take(n * kv_dim);
  float* gate = take(n * F);
  float* up = take(n * F);
  float* probs = take(c.num_attention_heads * cache.max_seq());

  embedding_forward(h, tokens, weights.embed, n);
  const AttentionDims dims{.batch = 1,
                           .n = n,
                           .pos0 = cache.pos(),
                           .heads = c.num_attention_heads,
                           .kv_heads = c.num_key_value_heads,
                           .head_dim = c.head_dim,
                           .kv_capacity = cache.max_seq()};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    // Activations are not kept: one buffer per role, overwritten in place.
    const BlockBuffers buffers{.in = h,
                               .attn_in = normed,
                               .attn_rstd = nullptr,
                               .q = q,
                               .k_new = k_new,
                               .v_new = v_new,
                               .k = cache.keys(l),
                               .v = cache.values(l),
                               .probs = probs,
                               .keep_probs = false,
                               .att = att,
                               .mid = h,
                               .mlp_in = normed,
                               .mlp_rstd = nullptr,
                               .gate = gate,
                               .up = up,
                               .act = gate,
                               .out = h};
    block_forward(weights.layers[l], weights, dims, buffers);
  }
  const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
  rmsnorm_forward(normed, nullptr, h + first * C, weights.final_norm.as<float>(), rows, C,
                  float(c.rms_norm_eps));
  linear_forward(logits, normed, weights.lm_head, rows);
  cache.advance(n);
}

}  // namespace bd
