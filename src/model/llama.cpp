#include "model/llama.h"

#include <algorithm>
#include <map>
#include <utility>

#include "core/error.h"
#include "io/checkpoint.h"
#include "kernels/rope.h"

namespace bd {

namespace {

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

std::string layer_tensor_name(int64_t layer, const char* suffix) {
  return cat("model.layers.", layer, ".", suffix);
}

std::vector<TensorSpec> llama_tensor_specs(const LlamaConfig& c) {
  const int64_t C = c.hidden_size, F = c.intermediate_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  std::vector<TensorSpec> specs = {{"model.embed_tokens.weight", {c.vocab_size, C}}};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    specs.push_back({layer_tensor_name(l, "input_layernorm.weight"), {C}});
    specs.push_back({layer_tensor_name(l, "self_attn.q_proj.weight"), {q_dim, C}});
    specs.push_back({layer_tensor_name(l, "self_attn.k_proj.weight"), {kv_dim, C}});
    specs.push_back({layer_tensor_name(l, "self_attn.v_proj.weight"), {kv_dim, C}});
    specs.push_back({layer_tensor_name(l, "self_attn.o_proj.weight"), {C, q_dim}});
    specs.push_back({layer_tensor_name(l, "post_attention_layernorm.weight"), {C}});
    specs.push_back({layer_tensor_name(l, "mlp.gate_proj.weight"), {F, C}});
    specs.push_back({layer_tensor_name(l, "mlp.up_proj.weight"), {F, C}});
    specs.push_back({layer_tensor_name(l, "mlp.down_proj.weight"), {C, F}});
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

  int64_t slot = 0;  // kLinearsPerLayer per layer, in LayerWeights order, then the head
  auto linear = [&](const std::string& name) { return Linear{name, views.at(name), slot++}; };
  w.embed = views.at("model.embed_tokens.weight");
  w.final_norm = views.at("model.norm.weight");
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    LayerWeights layer;
    layer.attn_norm = views.at(layer_tensor_name(l, "input_layernorm.weight"));
    layer.mlp_norm = views.at(layer_tensor_name(l, "post_attention_layernorm.weight"));
    layer.q = linear(layer_tensor_name(l, "self_attn.q_proj.weight"));
    layer.k = linear(layer_tensor_name(l, "self_attn.k_proj.weight"));
    layer.v = linear(layer_tensor_name(l, "self_attn.v_proj.weight"));
    layer.o = linear(layer_tensor_name(l, "self_attn.o_proj.weight"));
    layer.gate = linear(layer_tensor_name(l, "mlp.gate_proj.weight"));
    layer.up = linear(layer_tensor_name(l, "mlp.up_proj.weight"));
    layer.down = linear(layer_tensor_name(l, "mlp.down_proj.weight"));
    w.layers.push_back(std::move(layer));
  }
  w.lm_head =
      config.tie_word_embeddings ? linear("model.embed_tokens.weight") : linear("lm_head.weight");
  return w;
}

LlamaWeights weights_from_checkpoint(const Checkpoint& checkpoint) {
  validate_llama_tensors(checkpoint);
  return make_llama_weights(checkpoint.config(), checkpoint.dir(),
                            [&](const std::string& name) { return checkpoint.find(name); });
}

}  // namespace bd
