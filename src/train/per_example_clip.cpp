#include "train/per_example_clip.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/blas.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"

namespace bd {

namespace {

const std::string kEmbedding = "model.embed_tokens.weight";

size_t parameter_count(const LlamaConfig& config) {
  size_t count = 0;
  for (const TensorSpec& spec : llama_tensor_specs(config))
    count += size_t(shape_numel(spec.shape));
  return count;
}

// Σ_{t,s} A[t,s]·B[t,s] of two symmetric T×T matrices of which ssyrk wrote the upper triangles.
double symmetric_dot(const float* a, const float* b, int64_t T) {
  double sum = 0;
  for (int64_t t = 0; t < T; ++t) {
    sum += double(a[t * T + t]) * double(b[t * T + t]);
    double off = 0;
    for (int64_t s = t + 1; s < T; ++s) off += double(a[t * T + s]) * double(b[t * T + s]);
    sum += 2 * off;
  }
  return sum;
}

double sum_of_squares(const float* values, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += double(values[i]) * double(values[i]);
  return sum;
}

// Multiplies row r of m[rows, width] by factors[r / rows_per_factor].
void scale_rows(float* m, int64_t rows, int64_t width, const std::vector<float>& factors,
                int64_t rows_per_factor) {
#pragma omp parallel for schedule(static) if (rows * width >= (int64_t(1) << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const float factor = factors[size_t(r / rows_per_factor)];
    for (int64_t j = 0; j < width; ++j) m[r * width + j] *= factor;
  }
}

const ParamSlice& slice_named(const LlamaParams& params, const std::string& name) {
  for (const ParamSlice& slice : params.slices())
    if (slice.name == name) return slice;
  fail("per-example clipping: the gradient buffer has no tensor ", name);
}

// The example's positions grouped by token: (token, position) sorted.
std::vector<std::pair<int32_t, int64_t>> positions_by_token(const int32_t* tokens, int64_t T) {
  std::vector<std::pair<int32_t, int64_t>> order(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) order[size_t(t)] = {tokens[t], t};
  std::sort(order.begin(), order.end());
  return order;
}

}  // namespace

PerExampleClipper::PerExampleClipper(const LlamaConfig& config, std::set<std::string> frozen,
                                     int64_t max_examples, int64_t seq, PerExampleMethod method)
    : config_(config),
      frozen_(std::move(frozen)),
      max_examples_(max_examples),
      seq_(seq),
      method_(method) {
  if (max_examples < 1 || seq < 1)
    fail("per-example clipping needs at least one example of one token, got ", max_examples,
         " examples of ", seq);
  const int64_t C = config.hidden_size, F = config.intermediate_size;
  const int64_t q_dim = config.num_attention_heads * config.head_dim;
  const int64_t kv_dim = config.num_key_value_heads * config.head_dim;
  const int64_t rows = max_examples * seq, L = config.num_hidden_layers;
  // Every linear's output gradient but the head's: q, k, v, o, gate, up, down per layer.
  dy_store_.resize(size_t(rows * L * (q_dim + 2 * kv_dim + C + 2 * F + C)));
  norm_store_.resize(size_t((2 * L + 1) * max_examples * C));
  if (method == PerExampleMethod::materialized)
    per_example_.resize(size_t(max_examples) * parameter_count(config));
  // Sizes every BLAS call below uses, checked here so that none can throw inside a parallel
  // region.
  blas_int(rows * std::max({C, F, q_dim, config.vocab_size}), "per-example clipping", "rows");
}

void PerExampleClipper::on_linear(const std::string& name, const float* X, const float* dY,
                                  int64_t rows, int64_t in, int64_t out) {
  if (frozen_.count(name)) return;
  float* dy = const_cast<float*>(logits_);  // the head's dY is acts.logits, which stays
  if (dY != logits_) {
    const size_t size = size_t(rows * out);
    if (dy_used_ + size > dy_store_.size())
      fail("per-example clipping: more linear layers than the model config has");
    dy = dy_store_.data() + dy_used_;
    std::copy_n(dY, size, dy);
    dy_used_ += size;
  }
  const bool ghost = seq_ * (in + out) / 2 < in * out;
  int64_t x_gram = -1;  // linears that read the same input share its Gram matrices
  if (ghost) {
    int64_t grams = 0;
    for (const RecordedLinear& earlier : linears_) {
      if (earlier.ghost && earlier.x == X) x_gram = earlier.x_gram;
      grams = std::max(grams, earlier.x_gram + 1);
    }
    if (x_gram < 0) x_gram = grams;
  }
  linears_.push_back(RecordedLinear{name, X, dy, in, out, ghost, x_gram});
}

void PerExampleClipper::on_norm(const std::string& name, const float* X, const float* inv_rms,
                                const float* dY, int64_t rows, int64_t dim) {
  if (frozen_.count(name)) return;
  const int64_t examples = rows / seq_;
  const size_t size = size_t(examples * dim);
  if (norm_used_ + size > norm_store_.size())
    fail("per-example clipping: more norms than the model config has");
  float* per_example = norm_store_.data() + norm_used_;
  norm_used_ += size;
  // dw_i[c] = Σ_{t in example i} dY[t, c] · X[t, c] · inv_rms[t]
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < examples; ++i) {
    float* dw = per_example + i * dim;
    std::fill_n(dw, dim, 0.0f);
    for (int64_t t = i * seq_; t < (i + 1) * seq_; ++t)
      for (int64_t c = 0; c < dim; ++c) dw[c] += dY[t * dim + c] * X[t * dim + c] * inv_rms[t];
  }
  norms_.push_back(RecordedNorm{name, per_example});
}

ClipStats PerExampleClipper::clip_and_accumulate(const LlamaWeights& weights,
                                                 TrainActivations& acts, double max_norm,
                                                 LlamaParams& grads) {
  if (acts.T != seq_ || acts.B > max_examples_)
    fail("per-example clipping was sized for ", max_examples_, " windows of ", seq_,
         " tokens, got ", acts.B, " of ", acts.T);
  const int64_t rows = acts.B * acts.T;
  if (acts.counted != rows)
    fail("per-example clipping needs every target counted, got ", acts.counted, " of ", rows);
  if (!(max_norm > 0)) fail("the clipping norm must be positive, got ", max_norm);
  linears_.clear();
  norms_.clear();
  dy_used_ = norm_used_ = 0;
  // dL_i/dlogits for ℓ_i = the mean loss over example i's T tokens.
  cross_entropy_backward(acts.logits, acts.logits, acts.lse, acts.targets.data(), rows,
                         config_.vocab_size, 1.0f / float(acts.T));
  logits_ = acts.logits;
  backward_from_logits(weights, acts, nullptr, this);
  logits_ = nullptr;

  const std::vector<double> norms2 =
      method_ == PerExampleMethod::ghost ? ghost_norms2(acts) : materialized_norms2(acts, grads);
  ClipStats stats;
  std::vector<float> factors(size_t(acts.B));
  for (int64_t i = 0; i < acts.B; ++i) {
    const double norm = std::sqrt(norms2[size_t(i)]);
    stats.norms.push_back(norm);
    // The 1e-6 guard is Opacus's: the factor never divides by zero.
    const double factor = std::min(1.0, max_norm / (norm + 1e-6));
    stats.clipped += factor < 1.0;
    factors[size_t(i)] = float(factor);
  }
  if (method_ == PerExampleMethod::ghost)
    accumulate_ghost(acts, factors, grads);
  else
    accumulate_materialized(factors, acts.B, grads);
  return stats;
}

std::vector<double> PerExampleClipper::ghost_norms2(const TrainActivations& acts) {
  const int64_t B = acts.B, T = acts.T, TT = T * T;
  // The Gram matrices X_i X_iᵀ first, once per input that several linears share (q, k and v
  // read the same normed input, gate and up another).
  std::vector<const RecordedLinear*> gram_of;  // the first linear of each shared input
  for (const RecordedLinear& linear : linears_)
    if (linear.ghost && linear.x_gram == int64_t(gram_of.size())) gram_of.push_back(&linear);
  x_grams_.resize(gram_of.size() * size_t(B * TT));
  const int64_t gram_items = int64_t(gram_of.size()) * B;
#pragma omp parallel for schedule(dynamic)
  for (int64_t item = 0; item < gram_items; ++item) {
    const RecordedLinear& linear = *gram_of[size_t(item / B)];
    const int64_t i = item % B;
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, int(T), int(linear.in), 1.0f,
                linear.x + i * T * linear.in, int(linear.in), 0.0f,
                x_grams_.data() + size_t(item) * size_t(TT), int(T));
  }
  // Then per linear and example: ‖dY_iᵀ X_i‖² = Σ_{t,s} (X_i X_iᵀ)[t,s] · (dY_i dY_iᵀ)[t,s], or
  // the materialised dY_iᵀ X_i's squares. Scratch per thread: one T×T or one O×I matrix.
  size_t scratch = size_t(TT);
  for (const RecordedLinear& linear : linears_)
    if (!linear.ghost) scratch = std::max(scratch, size_t(linear.in * linear.out));
  std::vector<float> scratch_memory(scratch * size_t(omp_get_max_threads()));
  const int64_t items = int64_t(linears_.size()) * B;
  std::vector<double> per_item(static_cast<size_t>(items));
#pragma omp parallel for schedule(dynamic)
  for (int64_t item = 0; item < items; ++item) {
    const RecordedLinear& linear = linears_[size_t(item / B)];
    const int64_t i = item % B, I = linear.in, O = linear.out;
    const float* dy = linear.dy + i * T * O;
    float* own = scratch_memory.data() + scratch * size_t(omp_get_thread_num());
    if (linear.ghost) {
      cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, int(T), int(O), 1.0f, dy, int(O), 0.0f,
                  own, int(T));
      const float* x_gram = x_grams_.data() + size_t(linear.x_gram * B + i) * size_t(TT);
      per_item[size_t(item)] = symmetric_dot(x_gram, own, T);
    } else {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(O), int(I), int(T), 1.0f, dy, int(O),
                  linear.x + i * T * I, int(I), 0.0f, own, int(I));
      per_item[size_t(item)] = sum_of_squares(own, size_t(O * I));
    }
  }
  std::vector<double> norms2(size_t(B), 0.0);
  for (int64_t item = 0; item < items; ++item) norms2[size_t(item % B)] += per_item[size_t(item)];
  const int64_t C = config_.hidden_size;
  for (const RecordedNorm& norm : norms_)
    for (int64_t i = 0; i < B; ++i)
      norms2[size_t(i)] += sum_of_squares(norm.per_example + i * C, size_t(C));
  if (!frozen_.count(kEmbedding)) add_embedding_norms2(acts, norms2);
  return norms2;
}

// The embedding's gradient of example i puts H_v = Σ_{s: token s = v} d_h[s] in row v, so its
// squared norm is Σ_v ‖H_v‖²; tied to the head (A = Σ_t dlogits_t ⊗ x_t, whose ‖A‖² the head's
// linear gave), the tensor's gradient is A + E and the cross term
// 2<A, E> = 2 Σ_t Σ_v dlogits_t[v] (x_t · H_v) joins, with x_t · H_v from one product X_i Hᵀ.
void PerExampleClipper::add_embedding_norms2(const TrainActivations& acts,
                                             std::vector<double>& norms2) const {
  const int64_t B = acts.B, T = acts.T, C = config_.hidden_size, V = config_.vocab_size;
  const bool tied = config_.tie_word_embeddings;
  // Per thread: H [distinct tokens ≤ T, C] and X_i Hᵀ [T, distinct].
  const size_t scratch = size_t(T * C + T * T);
  std::vector<float> scratch_memory(scratch * size_t(omp_get_max_threads()));
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < B; ++i) {
    float* h = scratch_memory.data() + scratch * size_t(omp_get_thread_num());
    float* products = h + T * C;
    const auto order = positions_by_token(acts.tokens.data() + i * T, T);
    std::vector<int32_t> distinct;
    double sum = 0;
    for (size_t start = 0; start < order.size();) {
      float* row = h + int64_t(distinct.size()) * C;
      std::fill_n(row, C, 0.0f);
      size_t end = start;
      for (; end < order.size() && order[end].first == order[start].first; ++end) {
        const float* d_h = acts.d_h + (i * T + order[end].second) * C;
        for (int64_t c = 0; c < C; ++c) row[c] += d_h[c];
      }
      sum += sum_of_squares(row, size_t(C));
      distinct.push_back(order[start].first);
      start = end;
    }
    if (tied) {
      const int D = int(distinct.size());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), D, int(C), 1.0f,
                  acts.final_out + i * T * C, int(C), h, int(C), 0.0f, products, D);
      double cross = 0;
      for (int64_t t = 0; t < T; ++t) {
        const float* dlogits = acts.logits + (i * T + t) * V;
        for (int k = 0; k < D; ++k)
          cross += double(dlogits[distinct[size_t(k)]]) * double(products[t * D + k]);
      }
      sum += 2 * cross;
    }
    norms2[size_t(i)] += sum;
  }
}

void PerExampleClipper::accumulate_ghost(TrainActivations& acts, const std::vector<float>& factors,
                                         LlamaParams& grads) {
  const int64_t rows = acts.B * acts.T, T = acts.T, C = config_.hidden_size;
  for (const RecordedLinear& linear : linears_) {  // dW += (c ⊙ dY)ᵀ X
    scale_rows(linear.dy, rows, linear.out, factors, T);
    float* dw = grads.data() + slice_named(grads, linear.name).offset;
    sgemm("per-example clipping", CblasTrans, CblasNoTrans, linear.out, linear.in, rows, 1.0f,
          linear.dy, linear.out, linear.x, linear.in, 1.0f, dw, linear.in);
  }
  for (const RecordedNorm& norm : norms_) {
    float* dw = grads.data() + slice_named(grads, norm.name).offset;
    for (int64_t i = 0; i < acts.B; ++i)
      for (int64_t c = 0; c < C; ++c) dw[c] += factors[size_t(i)] * norm.per_example[i * C + c];
  }
  if (frozen_.count(kEmbedding)) return;
  scale_rows(acts.d_h, rows, C, factors, T);
  embedding_backward(grads.data() + slice_named(grads, kEmbedding).offset, acts.d_h,
                     acts.tokens.data(), rows, C);
}

std::vector<double> PerExampleClipper::materialized_norms2(const TrainActivations& acts,
                                                           LlamaParams& grads) {
  const int64_t B = acts.B, T = acts.T, C = config_.hidden_size;
  const size_t P = grads.size();
  // Where each recorded tensor lives, looked up before the parallel region (which must not
  // throw).
  std::vector<size_t> linear_offsets, norm_offsets;
  for (const RecordedLinear& linear : linears_)
    linear_offsets.push_back(slice_named(grads, linear.name).offset);
  for (const RecordedNorm& norm : norms_)
    norm_offsets.push_back(slice_named(grads, norm.name).offset);
  const bool embedding = !frozen_.count(kEmbedding);
  const size_t embedding_offset = embedding ? slice_named(grads, kEmbedding).offset : 0;
  std::vector<double> norms2(static_cast<size_t>(B));
  // One example per thread: its whole gradient written out, as Opacus's grad_sample holds it.
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < B; ++i) {
    float* g = per_example_.data() + size_t(i) * P;
    std::fill_n(g, P, 0.0f);
    for (size_t k = 0; k < linears_.size(); ++k) {
      const RecordedLinear& linear = linears_[k];
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(linear.out), int(linear.in), int(T),
                  1.0f, linear.dy + i * T * linear.out, int(linear.out),
                  linear.x + i * T * linear.in, int(linear.in), 1.0f, g + linear_offsets[k],
                  int(linear.in));
    }
    for (size_t k = 0; k < norms_.size(); ++k)
      for (int64_t c = 0; c < C; ++c)
        g[norm_offsets[k] + size_t(c)] += norms_[k].per_example[i * C + c];
    if (embedding) {
      float* table = g + embedding_offset;
      for (int64_t t = i * T; t < (i + 1) * T; ++t)
        for (int64_t c = 0; c < C; ++c)
          table[acts.tokens[size_t(t)] * C + c] += acts.d_h[t * C + c];
    }
    norms2[size_t(i)] = sum_of_squares(g, P);
  }
  return norms2;
}

void PerExampleClipper::accumulate_materialized(const std::vector<float>& factors, int64_t examples,
                                                LlamaParams& grads) {
  const int64_t P = int64_t(grads.size());
  float* g = grads.data();
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < P; ++j) {
    float sum = 0;
    for (int64_t i = 0; i < examples; ++i)
      sum += factors[size_t(i)] * per_example_[size_t(i * P + j)];
    g[j] += sum;
  }
}

}  // namespace bd
