#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/blas.h"
#include "kernels/parallel.h"
#include "kernels/vector_ops.h"

namespace bd {

namespace {

// p[0, len) = softmax(p[0, len)) in place, p[len, width) = 0 (the causal mask).
void causal_softmax(float* p, int64_t len, int64_t width) {
  const float max_score = *std::max_element(p, p + len);
  float sum = 0;
  for (int64_t s = 0; s < len; ++s) {
    p[s] = std::exp(p[s] - max_score);
    sum += p[s];
  }
  const float inv_sum = 1.0f / sum;
  for (int64_t s = 0; s < len; ++s) p[s] *= inv_sum;
  std::fill(p + len, p + width, 0.0f);
}

// One query row (decode, or prefill without kept probs): p[len] = softmax(q·kᵀ · scale),
// out[D] = Σ_s p[s] · v_s, with k, v[len, D].
void attend_row(float* out, float* p, const float* q, const float* k, const float* v, int64_t len,
                int64_t D, float scale) {
  for (int64_t s = 0; s < len; ++s) p[s] = dot(q, k + s * D, D) * scale;
  causal_softmax(p, len, len);
  std::fill(out, out + D, 0.0f);
  for (int64_t s = 0; s < len; ++s) axpy(p[s], v + s * D, out, D);
}

// All n query rows of one head at once (training), as two GEMMs: P[n, S] = softmax(q·kᵀ · scale)
// with the causal mask, out = P·v. q and out rows are strided by `row_stride` (the other heads sit
// in between). Computing the masked upper triangle too costs 2x the flops of the triangle but
// runs at GEMM speed.
void attend_block(float* out, float* P, const float* q, const float* k, const float* v, int64_t n,
                  int64_t pos0, int64_t D, int64_t row_stride, float scale) {
  const int64_t S = pos0 + n;
  sgemm("attention", CblasNoTrans, CblasTrans, n, S, D, scale, q, row_stride, k, D, 0.0f, P, S);
  for (int64_t t = 0; t < n; ++t) causal_softmax(P + t * S, pos0 + t + 1, S);
  sgemm("attention", CblasNoTrans, CblasNoTrans, n, D, S, 1.0f, P, S, v, D, 0.0f, out, row_stride);
}

// The SGEMM sizes the parallel regions below use (n, S, D, H·D) checked before any region starts,
// so that no exception has to leave one.
void check_blas_dims(const char* caller, const AttentionDims& d) {
  if (d.heads < 1 || d.kv_heads < 1 || d.heads % d.kv_heads != 0 || d.head_dim < 1 || d.n < 0 ||
      d.pos0 < 0 || d.kv_capacity < d.keys())
    fail(caller, ": inconsistent dims (heads ", d.heads, ", kv_heads ", d.kv_heads, ", head_dim ",
         d.head_dim, ", n ", d.n, ", pos0 ", d.pos0, ", kv_capacity ", d.kv_capacity, ")");
  blas_int(d.n, caller, "query rows");
  blas_int(d.keys(), caller, "key positions");
  blas_int(d.heads * d.head_dim, caller, "heads x head_dim");
}

}  // namespace

void kv_store(float* kv, const float* rows, const AttentionDims& d) {
  const int64_t D = d.head_dim;
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t t = 0; t < d.n; ++t)
      for (int64_t h = 0; h < d.kv_heads; ++h)
        std::copy_n(rows + ((b * d.n + t) * d.kv_heads + h) * D, D,
                    kv + ((b * d.kv_heads + h) * d.kv_capacity + d.pos0 + t) * D);
}

void kv_load(float* rows, const float* kv, const AttentionDims& d) {
  const int64_t D = d.head_dim;
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t t = 0; t < d.n; ++t)
      for (int64_t h = 0; h < d.kv_heads; ++h)
        std::copy_n(kv + ((b * d.kv_heads + h) * d.kv_capacity + d.pos0 + t) * D, D,
                    rows + ((b * d.n + t) * d.kv_heads + h) * D);
}

void attention_forward(float* out, float* probs, const float* q, const float* k, const float* v,
                       const AttentionDims& d, bool keep_probs) {
  const int64_t H = d.heads, D = d.head_dim, S = d.keys(), group = d.heads / d.kv_heads;
  const float scale = 1.0f / std::sqrt(float(D));
  auto kv_head = [&](int64_t b, int64_t h) {
    return (b * d.kv_heads + h / group) * d.kv_capacity * D;
  };
  if (keep_probs) check_blas_dims("attention_forward", d);
  // Score and weighted-sum work: about 2·S·D per query row and head.
  const bool parallel = d.batch * H * d.n * S * D >= kMinParallelWork;
  if (keep_probs) {
    // BLAS calls inside the parallel loop run single-threaded (OpenBLAS's OpenMP build).
#pragma omp parallel for collapse(2) if (parallel)
    for (int64_t b = 0; b < d.batch; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t first_row = b * d.n * H + h;
        attend_block(out + first_row * D, probs + (b * H + h) * d.n * S, q + first_row * D,
                     k + kv_head(b, h), v + kv_head(b, h), d.n, d.pos0, D, H * D, scale);
      }
    return;
  }
  // Scratch probs: one row per (b, h), reused across that head's queries.
#pragma omp parallel for collapse(2) if (parallel)
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < d.n; ++t) {
        const int64_t row = (b * d.n + t) * H + h;
        attend_row(out + row * D, probs + (b * H + h) * d.kv_capacity, q + row * D,
                   k + kv_head(b, h), v + kv_head(b, h), d.pos0 + t + 1, D, scale);
      }
}

// Per query head, with G = dout and P the kept probabilities (GEMMs over all n rows):
//   dP = G·vᵀ,  dS = P ⊙ (dP - rowsum(P ⊙ dP)) · scale,  dq = dS·k,  dk += dSᵀ·q,  dv += Pᵀ·G.
// Threads split by (sequence, KV head) so that the query heads sharing a KV head, which all add
// into its dk and dv, run on one thread.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* probs,
                        const AttentionDims& d) {
  const int64_t H = d.heads, D = d.head_dim, n = d.n, S = d.keys(), group = d.heads / d.kv_heads;
  check_blas_dims("attention_backward", d);
  const int64_t ld = H * D;
  const float scale = 1.0f / std::sqrt(float(D));
#pragma omp parallel if (d.batch * H * n * S * D >= kMinParallelWork)
  {
    std::vector<float> dS(static_cast<size_t>(n * S));
#pragma omp for collapse(2)
    for (int64_t b = 0; b < d.batch; ++b)
      for (int64_t kvh = 0; kvh < d.kv_heads; ++kvh) {
        const int64_t kv_offset = (b * d.kv_heads + kvh) * d.kv_capacity * D;
        const float* kh = k + kv_offset;
        const float* vh = v + kv_offset;
        float* dkh = dk + kv_offset;
        float* dvh = dv + kv_offset;
        std::fill(dkh, dkh + S * D, 0.0f);
        std::fill(dvh, dvh + S * D, 0.0f);
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
          const int64_t first_row = b * n * H + h;
          const float* P = probs + (b * H + h) * n * S;
          const float* G = dout + first_row * D;
          const float* qh = q + first_row * D;
          sgemm("attention_backward", CblasNoTrans, CblasTrans, n, S, D, 1.0f, G, ld, vh, D, 0.0f,
                dS.data(), S);
          for (int64_t t = 0; t < n; ++t) {
            const int64_t len = d.pos0 + t + 1;
            const float* p = P + t * S;
            float* row = dS.data() + t * S;
            const float p_dot_dp = dot(p, row, len);
            for (int64_t s = 0; s < len; ++s) row[s] = p[s] * (row[s] - p_dot_dp) * scale;
            std::fill(row + len, row + S, 0.0f);
          }
          sgemm("attention_backward", CblasNoTrans, CblasNoTrans, n, D, S, 1.0f, dS.data(), S, kh,
                D, 0.0f, dq + first_row * D, ld);
          sgemm("attention_backward", CblasTrans, CblasNoTrans, S, D, n, 1.0f, dS.data(), S, qh, ld,
                1.0f, dkh, D);
          sgemm("attention_backward", CblasTrans, CblasNoTrans, S, D, n, 1.0f, P, S, G, ld, 1.0f,
                dvh, D);
        }
      }
  }
}

}  // namespace bd
