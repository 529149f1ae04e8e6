#include "delta/overlay.h"

#include <map>
#include <set>
#include <string>

#include "core/error.h"
#include "kernels/sign_matmul.h"

namespace bd {

namespace {

// The linears an overlay may sit on: every block projection, and the head when it is its own
// tensor (a tied head is the embedding, whose lookup has no overlay).
std::map<std::string, Linear*> overlay_targets(LlamaWeights& weights) {
  std::map<std::string, Linear*> targets;
  for (LayerWeights& layer : weights.layers) {
    for (Linear* linear :
         {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate, &layer.up, &layer.down}) {
      targets[linear->name] = linear;
    }
  }
  if (!weights.config.tie_word_embeddings) targets[weights.lm_head.name] = &weights.lm_head;
  return targets;
}

void check_matrix(const AdapterMatrix& m, const Linear& linear) {
  if (m.out != linear.out_features() || m.in != linear.in_features())
    fail("adapter tensor ", quote_bytes(m.name), " is [", m.out, ", ", m.in, "], the base's is ",
         shape_str(linear.weight.shape));
  const Shape sign_shape = {m.out, sign_row_bytes(m.in)};
  if (m.sign.dtype != DType::U8 || m.sign.shape != sign_shape)
    fail("adapter tensor '", m.name, ".sign' must be U8 ", shape_str(sign_shape), ", got ",
         dtype_name(m.sign.dtype), " ", shape_str(m.sign.shape));
  if (m.scale.dtype != DType::F32 || m.scale.shape.size() != 1 ||
      (m.scale.dim(0) != 1 && m.scale.dim(0) != m.out))
    fail("adapter tensor '", m.name, ".scale' must be F32 [1] or [", m.out, "], got ",
         dtype_name(m.scale.dtype), " ", shape_str(m.scale.shape));
}

}  // namespace

DeltaWeights::DeltaWeights(const Checkpoint& base, const std::vector<AdapterMatrix>& matrices,
                           const std::vector<AdapterExact>& exact,
                           const std::vector<float*>& scales) {
  validate_llama_tensors(base);
  if (!scales.empty() && scales.size() != matrices.size())
    fail("DeltaWeights: ", scales.size(), " scale overrides for ", matrices.size(), " matrices");

  // Tensors kept exactly become base + delta in F32 (few and small: norms, embeddings, head).
  std::map<std::string, const TensorView*> replaced;
  materialised_.reserve(exact.size());
  materialised_views_.reserve(exact.size());
  for (const AdapterExact& e : exact) {
    const TensorView* stored = base.find(e.name);
    if (!stored)
      fail("adapter tensor ", quote_bytes(e.name), " is not in the base model ", base.dir());
    if (e.delta.shape != stored->shape || !is_float(e.delta.dtype))
      fail("adapter tensor '", e.name, ".delta' is ", dtype_name(e.delta.dtype), " ",
           shape_str(e.delta.shape), ", the base's is ", dtype_name(stored->dtype), " ",
           shape_str(stored->shape));
    if (replaced.count(e.name)) fail("adapter holds two deltas for ", quote_bytes(e.name));
    std::vector<float> values = to_f32(*stored);
    const std::vector<float> delta = to_f32(e.delta);
    for (size_t i = 0; i < values.size(); ++i) values[i] += delta[i];
    materialised_.push_back(std::move(values));
    materialised_views_.push_back(
        TensorView{DType::F32, stored->shape, materialised_.back().data()});
    replaced[e.name] = &materialised_views_.back();
  }
  weights_ = make_llama_weights(base.config(), base.dir(), [&](const std::string& name) {
    auto it = replaced.find(name);
    return it != replaced.end() ? it->second : base.find(name);
  });

  std::map<std::string, Linear*> targets = overlay_targets(weights_);
  std::set<std::string> seen;
  for (size_t i = 0; i < matrices.size(); ++i) {
    const AdapterMatrix& m = matrices[i];
    auto it = targets.find(m.name);
    if (it == targets.end())
      fail("adapter tensor ", quote_bytes(m.name), " is not a linear layer of the base model ",
           base.dir());
    if (!seen.insert(m.name).second) fail("adapter compresses ", quote_bytes(m.name), " twice");
    if (replaced.count(m.name))
      fail("adapter holds ", quote_bytes(m.name), " both compressed and as an exact delta");
    check_matrix(m, *it->second);
    it->second->delta = SignDelta{.bits = m.sign.as<uint8_t>(),
                                  .scale = scales.empty() ? m.scale.as<float>() : scales[i],
                                  .per_row = m.per_row()};
  }
}

// check_base runs first: it names the adapter file and catches most mismatches by fingerprint.
DeltaWeights::DeltaWeights(const Checkpoint& base, const AdapterFile& adapter)
    : DeltaWeights((adapter.check_base(base), base), adapter.matrices(), adapter.exact()) {}

}  // namespace bd
