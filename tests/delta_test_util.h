// BitDelta adapters built in memory for the overlay and distillation tests: the tests' own
// packing (the layout of kernels/sign_matmul.h) and their own dense reconstruction, independent
// of the adapter writer and of the sign kernels.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "io/adapter.h"
#include "model/llama.h"
#include "model/llama_params.h"

namespace bd::test {

// bits[O, ceil(I/8)]: bit i % 8 of byte i / 8 of row o is set when delta[o, i] >= 0 (S = +1).
inline std::vector<uint8_t> pack_signs(const float* delta, int64_t O, int64_t I) {
  const int64_t row_bytes = (I + 7) / 8;
  std::vector<uint8_t> bits(size_t(O * row_bytes), 0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      if (delta[o * I + i] >= 0) bits[size_t(o * row_bytes + i / 8)] |= uint8_t(1u << (i % 8));
  return bits;
}

inline float unpacked_sign(const std::vector<uint8_t>& bits, int64_t I, int64_t o, int64_t i) {
  const int64_t row_bytes = (I + 7) / 8;
  return (bits[size_t(o * row_bytes + i / 8)] >> (i % 8)) & 1 ? 1.0f : -1.0f;
}

// The block linears of a config: the weights BitDelta compresses.
inline std::vector<std::string> block_linear_names(const LlamaConfig& config) {
  std::vector<std::string> names;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    for (const char* part : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                             "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
      names.push_back("model.layers." + std::to_string(l) + "." + part + ".weight");
  return names;
}

// The tensors BitDelta keeps exactly: everything but the block linears (embedding, norms, head).
inline std::vector<std::string> exact_tensor_names(const LlamaConfig& config) {
  const std::vector<std::string> linears = block_linear_names(config);
  std::vector<std::string> names;
  for (const TensorSpec& spec : llama_tensor_specs(config))
    if (std::find(linears.begin(), linears.end(), spec.name) == linears.end())
      names.push_back(spec.name);
  return names;
}

// An adapter whose views point into its own buffers (moves keep them valid).
struct InMemoryAdapter {
  std::vector<std::vector<uint8_t>> sign_bytes;
  std::vector<std::vector<float>> scale_values;
  std::vector<std::vector<uint8_t>> exact_bytes;
  std::vector<AdapterMatrix> matrices;
  std::vector<AdapterExact> exact;

  std::vector<float*> scale_pointers() {
    std::vector<float*> pointers;
    for (std::vector<float>& s : scale_values) pointers.push_back(s.data());
    return pointers;
  }
};

// Compresses finetune − base: every block linear to sign(δ) and mean |δ| (per output row where
// per_row(name)), and the tensors in exact_names kept exactly as `exact_dtype`.
inline InMemoryAdapter compress_in_memory(const LlamaParams& base, const LlamaParams& finetune,
                                          const std::function<bool(const std::string&)>& per_row,
                                          const std::vector<std::string>& exact_names,
                                          DType exact_dtype) {
  InMemoryAdapter a;
  const std::vector<std::string> names = block_linear_names(base.config());
  std::vector<Shape> shapes;
  for (const std::string& name : names) {
    const ParamSlice* slice = nullptr;
    for (const ParamSlice& s : base.slices())
      if (s.name == name) slice = &s;
    const int64_t O = slice->shape[0], I = slice->shape[1];
    std::vector<float> delta(slice->numel);
    for (size_t k = 0; k < delta.size(); ++k)
      delta[k] = finetune.find(name)[k] - base.find(name)[k];
    a.sign_bytes.push_back(pack_signs(delta.data(), O, I));
    std::vector<double> row_mean(size_t(O), 0.0);
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i)
        row_mean[size_t(o)] += std::fabs(delta[size_t(o * I + i)]) / I;
    std::vector<float> scale;
    if (per_row(name)) {
      for (double m : row_mean) scale.push_back(float(m));
    } else {
      double all = 0;
      for (double m : row_mean) all += m / O;
      scale.push_back(float(all));
    }
    a.scale_values.push_back(scale);
    shapes.push_back(slice->shape);
  }
  for (const std::string& name : exact_names) {
    const ParamSlice* slice = nullptr;
    for (const ParamSlice& s : base.slices())
      if (s.name == name) slice = &s;
    std::vector<float> delta(slice->numel);
    for (size_t k = 0; k < delta.size(); ++k)
      delta[k] = finetune.find(name)[k] - base.find(name)[k];
    std::vector<uint8_t> bytes(delta.size() * dtype_size(exact_dtype));
    from_f32(exact_dtype, delta.data(), bytes.data(), delta.size());
    a.exact_bytes.push_back(std::move(bytes));
  }
  for (size_t m = 0; m < names.size(); ++m) {
    const int64_t O = shapes[m][0], I = shapes[m][1];
    a.matrices.push_back(AdapterMatrix{
        .name = names[m],
        .out = O,
        .in = I,
        .sign = TensorView{DType::U8, {O, (I + 7) / 8}, a.sign_bytes[m].data()},
        .scale =
            TensorView{DType::F32, {int64_t(a.scale_values[m].size())}, a.scale_values[m].data()}});
  }
  for (size_t e = 0; e < exact_names.size(); ++e) {
    const ParamSlice* slice = nullptr;
    for (const ParamSlice& s : base.slices())
      if (s.name == exact_names[e]) slice = &s;
    a.exact.push_back(AdapterExact{exact_names[e],
                                   TensorView{exact_dtype, slice->shape, a.exact_bytes[e].data()}});
  }
  return a;
}

// W_base + γ ⊙ S for every matrix and base + delta for every exact tensor, densely in F32: what
// `bitdelta apply --dtype f32` writes, computed here from the unpacked bits.
inline LlamaParams apply_in_memory(const LlamaParams& base, const InMemoryAdapter& a) {
  LlamaParams dense = base;
  for (size_t m = 0; m < a.matrices.size(); ++m) {
    const AdapterMatrix& matrix = a.matrices[m];
    float* w = dense.find(matrix.name);
    const float* scale = matrix.scale.as<float>();
    for (int64_t o = 0; o < matrix.out; ++o)
      for (int64_t i = 0; i < matrix.in; ++i)
        w[o * matrix.in + i] +=
            scale[matrix.per_row() ? o : 0] * unpacked_sign(a.sign_bytes[m], matrix.in, o, i);
  }
  for (const AdapterExact& e : a.exact) {
    const std::vector<float> delta = to_f32(e.delta);
    float* w = dense.find(e.name);
    for (size_t k = 0; k < delta.size(); ++k) w[k] += delta[k];
  }
  return dense;
}

// finetune = base + δ with δ ~ N(0, (σ·r_o)²) per output row o, r_o uniform in [0.2, 2]: rows of
// very different magnitude, so that one scale per matrix is visibly worse than one per row and
// distillation has something to correct. Norms and the embedding change too (exact deltas).
inline LlamaParams finetune_of(const LlamaParams& base, float sigma, uint64_t seed) {
  LlamaParams tuned = base;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> row_factor(0.2f, 2.0f);
  for (const ParamSlice& slice : tuned.slices()) {
    float* w = tuned.data() + slice.offset;
    const int64_t rows = slice.shape[0];
    const int64_t cols = slice.shape.size() == 2 ? slice.shape[1] : 1;
    for (int64_t o = 0; o < rows; ++o) {
      const float r = row_factor(rng);
      for (int64_t i = 0; i < cols; ++i) w[o * cols + i] += sigma * r * normal(rng);
    }
  }
  return tuned;
}

}  // namespace bd::test
