#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace bd {

namespace {

inline float dot(const float* a, const float* b, int64_t n) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y[n] += alpha · x[n]
inline void axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// One query row: p[0, len) = softmax(q·k_sᵀ · scale), out[D] = Σ_s p[s] · v_s.
void attend_row(float* out, float* p, const float* q, const float* k, const float* v, int64_t len,
                int64_t D, float scale) {
  float max_score = -INFINITY;
  for (int64_t s = 0; s < len; ++s) {
    p[s] = dot(q, k + s * D, D) * scale;
    max_score = std::max(max_score, p[s]);
  }
  float sum = 0;
  for (int64_t s = 0; s < len; ++s) {
    p[s] = std::exp(p[s] - max_score);
    sum += p[s];
  }
  const float inv_sum = 1.0f / sum;
  std::fill(out, out + D, 0.0f);
  for (int64_t s = 0; s < len; ++s) {
    p[s] *= inv_sum;
    axpy(p[s], v + s * D, out, D);
  }
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
  if (keep_probs) {
    // Every row owns its probs row, so all (b, h, t) rows run in parallel.
#pragma omp parallel for collapse(3)
    for (int64_t b = 0; b < d.batch; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < d.n; ++t) {
          const int64_t row = (b * d.n + t) * H + h;
          attend_row(out + row * D, probs + ((b * H + h) * d.n + t) * S, q + row * D,
                     k + kv_head(b, h), v + kv_head(b, h), d.pos0 + t + 1, D, scale);
        }
    return;
  }
  // Scratch probs: one row per (b, h), reused across that head's queries.
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < d.n; ++t) {
        const int64_t row = (b * d.n + t) * H + h;
        attend_row(out + row * D, probs + (b * H + h) * d.kv_capacity, q + row * D,
                   k + kv_head(b, h), v + kv_head(b, h), d.pos0 + t + 1, D, scale);
      }
}

// For one query row with probabilities p and output gradient g:
//   dv_s += p_s·g,  dp_s = g·v_s,  ds_s = p_s·(dp_s - Σ_s' p_s'·dp_s'),
//   dq = scale·Σ_s ds_s·k_s,  dk_s += scale·ds_s·q.
// Threads split by (sequence, KV head) so that the query heads sharing a KV head, which all add
// into its dk and dv, run on one thread.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* probs,
                        const AttentionDims& d) {
  const int64_t H = d.heads, D = d.head_dim, S = d.keys(), group = d.heads / d.kv_heads;
  const float scale = 1.0f / std::sqrt(float(D));
#pragma omp parallel
  {
    std::vector<float> dp(static_cast<size_t>(S));
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
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
          for (int64_t t = 0; t < d.n; ++t) {
            const int64_t row = (b * d.n + t) * H + h, len = d.pos0 + t + 1;
            const float* p = probs + ((b * H + h) * d.n + t) * S;
            const float* g = dout + row * D;
            const float* qt = q + row * D;
            float p_dot_dp = 0;
            for (int64_t s = 0; s < len; ++s) {
              dp[s] = dot(g, vh + s * D, D);
              p_dot_dp += p[s] * dp[s];
              axpy(p[s], g, dvh + s * D, D);
            }
            float* dqt = dq + row * D;
            std::fill(dqt, dqt + D, 0.0f);
            for (int64_t s = 0; s < len; ++s) {
              const float ds = p[s] * (dp[s] - p_dot_dp) * scale;
              axpy(ds, kh + s * D, dqt, D);
              axpy(ds, qt, dkh + s * D, D);
            }
          }
      }
  }
}

}  // namespace bd
