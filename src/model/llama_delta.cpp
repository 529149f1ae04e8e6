#include "model/llama_delta.h"

#include <map>
#include <set>

#include "core/error.h"
#include "io/adapter.h"
#include "io/checkpoint.h"
#include "kernels/sign_matmul.h"
#include "model/llama.h"

namespace bd {

namespace {

std::string layer_name(int64_t layer, const char* suffix) {
  return cat("model.layers.", layer, ".", suffix);
}

// The linears an adapter may change, by name: every block projection, and the head when it is
// its own tensor (a tied head is the embedding, whose delta comes in as the embedding's).
std::map<std::string, const Linear*> linear_targets(const LlamaWeights& weights) {
  std::map<std::string, const Linear*> targets;
  for (const LayerWeights& layer : weights.layers)
    for (const Linear* linear :
         {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate, &layer.up, &layer.down})
      targets[linear->name] = linear;
  if (!weights.config.tie_word_embeddings) targets[weights.lm_head.name] = &weights.lm_head;
  return targets;
}

// The norms, by name: their slot and base view.
std::map<std::string, std::pair<int64_t, const TensorView*>> norm_targets(
    const LlamaWeights& weights) {
  std::map<std::string, std::pair<int64_t, const TensorView*>> targets;
  const int64_t L = int64_t(weights.layers.size());
  for (int64_t l = 0; l < L; ++l) {
    targets[layer_name(l, "input_layernorm.weight")] = {attn_norm_slot(l),
                                                        &weights.layers[size_t(l)].attn_norm};
    targets[layer_name(l, "post_attention_layernorm.weight")] = {
        mlp_norm_slot(l), &weights.layers[size_t(l)].mlp_norm};
  }
  targets["model.norm.weight"] = {final_norm_slot(L), &weights.final_norm};
  return targets;
}

void check_matrix(const AdapterMatrix& m, const Linear& linear) {
  if (m.out != linear.out_features() || m.in != linear.in_features())
    fail("adapter tensor ", quote_bytes(m.name), " is [", m.out, ", ", m.in, "], the base's is ",
         shape_str(linear.weight.shape));
  const Shape sign_shape = {m.out, sign_row_bytes(m.in)};
  if (m.sign.dtype != DType::U8 || m.sign.shape != sign_shape || !m.sign.data)
    fail("adapter tensor '", m.name, ".sign' must be U8 ", shape_str(sign_shape), ", got ",
         dtype_name(m.sign.dtype), " ", shape_str(m.sign.shape));
  if (m.scale.dtype != DType::F32 || m.scale.shape.size() != 1 ||
      (m.scale.dim(0) != 1 && m.scale.dim(0) != m.out) || !m.scale.data)
    fail("adapter tensor '", m.name, ".scale' must be F32 [1] or [", m.out, "], got ",
         dtype_name(m.scale.dtype), " ", shape_str(m.scale.shape));
}

// An exact delta must be a float tensor of the base tensor's shape.
void check_exact(const AdapterExact& e, const Shape& base_shape) {
  if (e.delta.shape != base_shape || !is_float(e.delta.dtype) || !e.delta.data)
    fail("adapter tensor '", e.name, ".delta' is ", dtype_name(e.delta.dtype), " ",
         shape_str(e.delta.shape), ", the base's is ", shape_str(base_shape));
}

}  // namespace

LlamaDelta make_llama_delta(const LlamaWeights& base, const std::string& source,
                            const std::vector<AdapterMatrix>& matrices,
                            const std::vector<AdapterExact>& exact,
                            const std::vector<float*>& scales) {
  if (!scales.empty() && scales.size() != matrices.size())
    fail("adapter: ", scales.size(), " scale overrides for ", matrices.size(), " matrices");
  const int64_t L = int64_t(base.layers.size());
  LlamaDelta delta;
  delta.norms.resize(size_t(2 * L + 1));
  delta.linears.resize(size_t(kLinearsPerLayer * L + 1));

  const std::map<std::string, const Linear*> linears = linear_targets(base);
  const auto norms = norm_targets(base);
  std::set<std::string> seen;
  for (const AdapterExact& e : exact) {
    if (!seen.insert(e.name).second) fail("adapter holds two deltas for ", quote_bytes(e.name));
    if (e.name == "model.embed_tokens.weight") {
      check_exact(e, base.embed.shape);
      delta.embed = e.delta;
      // A tied head is the embedding: its delta is the embedding's.
      if (base.config.tie_word_embeddings) delta.linears[size_t(base.lm_head.slot)].exact = e.delta;
    } else if (auto n = norms.find(e.name); n != norms.end()) {
      check_exact(e, n->second.second->shape);
      delta.norms[size_t(n->second.first)] = e.delta;
    } else if (auto l = linears.find(e.name); l != linears.end()) {
      check_exact(e, l->second->weight.shape);
      delta.linears[size_t(l->second->slot)].exact = e.delta;
    } else {
      fail("adapter tensor ", quote_bytes(e.name), " is not in the base model ", source);
    }
  }
  for (size_t i = 0; i < matrices.size(); ++i) {
    const AdapterMatrix& m = matrices[i];
    auto it = linears.find(m.name);
    if (it == linears.end())
      fail("adapter tensor ", quote_bytes(m.name), " is not a linear layer of the base model ",
           source);
    if (seen.count(m.name)) {
      const bool exact_too = delta.linears[size_t(it->second->slot)].exact.data != nullptr;
      fail("adapter ", exact_too ? "holds " : "compresses ", quote_bytes(m.name),
           exact_too ? " both compressed and as an exact delta" : " twice");
    }
    seen.insert(m.name);
    check_matrix(m, *it->second);
    delta.linears[size_t(it->second->slot)].sign =
        SignDelta{.bits = m.sign.as<uint8_t>(),
                  .scale = scales.empty() ? m.scale.as<float>() : scales[i],
                  .per_row = m.per_row()};
  }
  return delta;
}

// check_base runs first: it names the adapter file and catches most mismatches by fingerprint.
LlamaDelta make_llama_delta(const LlamaWeights& base, const Checkpoint& checkpoint,
                            const AdapterFile& adapter) {
  adapter.check_base(checkpoint);
  return make_llama_delta(base, checkpoint.dir(), adapter.matrices(), adapter.exact());
}

}  // namespace bd
