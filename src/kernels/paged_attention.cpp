#include "kernels/paged_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/parallel.h"
#include "kernels/vector_ops.h"

namespace bd {

namespace {

// Every block id a step will touch is inside the store (checked before any parallel region).
void check_tables(const PagedKV& kv, std::span<const PagedSequence> sequences) {
  for (const PagedSequence& s : sequences) {
    if (s.n < 0 || s.pos0 < 0 || (s.n > 0 && !s.table))
      fail("paged attention: bad sequence (row0 ", s.row0, ", n ", s.n, ", pos0 ", s.pos0, ")");
    const int64_t used = (s.pos0 + s.n + kv.block_size - 1) / kv.block_size;
    for (int64_t b = 0; b < used; ++b)
      if (s.table[b] < 0 || s.table[b] >= kv.blocks)
        fail("paged attention: block ", s.table[b], " is outside the store of ", kv.blocks,
             " blocks");
  }
}

// Where position p of KV head h of a sequence lives.
inline int64_t slot_offset(const PagedKV& kv, const int32_t* table, int64_t p, int64_t h) {
  const int64_t block = table[p / kv.block_size], slot = p % kv.block_size;
  return ((block * kv.kv_heads + h) * kv.block_size + slot) * kv.head_dim;
}

// One query row of one head: p[len] = softmax(q·kᵀ · scale), out[D] = Σ_s p[s] · v_s, walking
// the sequence's blocks.
void attend_row(float* out, float* p, const float* q, const PagedKV& kv, const int32_t* table,
                int64_t kv_head, int64_t len, float scale) {
  const int64_t D = kv.head_dim, bs = kv.block_size;
  const int64_t head_offset = kv_head * bs * D;
  for (int64_t start = 0; start < len; start += bs) {
    const int64_t block_offset = int64_t(table[start / bs]) * kv.kv_heads * bs * D + head_offset;
    const float* k = kv.keys + block_offset;
    const int64_t count = std::min(bs, len - start);
    for (int64_t s = 0; s < count; ++s) p[start + s] = dot(q, k + s * D, D) * scale;
  }
  const float max_score = *std::max_element(p, p + len);
  float sum = 0;
  for (int64_t s = 0; s < len; ++s) {
    p[s] = std::exp(p[s] - max_score);
    sum += p[s];
  }
  const float inv_sum = 1.0f / sum;
  std::fill(out, out + D, 0.0f);
  for (int64_t start = 0; start < len; start += bs) {
    const int64_t block_offset = int64_t(table[start / bs]) * kv.kv_heads * bs * D + head_offset;
    const float* v = kv.values + block_offset;
    const int64_t count = std::min(bs, len - start);
    for (int64_t s = 0; s < count; ++s) axpy(p[start + s] * inv_sum, v + s * D, out, D);
  }
}

}  // namespace

void paged_kv_store(const PagedKV& kv, const float* k_rows, const float* v_rows,
                    std::span<const PagedSequence> sequences) {
  check_tables(kv, sequences);
  const int64_t D = kv.head_dim;
  for (const PagedSequence& s : sequences)
    for (int64_t t = 0; t < s.n; ++t)
      for (int64_t h = 0; h < kv.kv_heads; ++h) {
        const int64_t row = ((s.row0 + t) * kv.kv_heads + h) * D;
        const int64_t at = slot_offset(kv, s.table, s.pos0 + t, h);
        std::copy_n(k_rows + row, D, kv.keys + at);
        std::copy_n(v_rows + row, D, kv.values + at);
      }
}

int64_t paged_attention_scratch(std::span<const PagedSequence> sequences) {
  int64_t longest = 1;
  for (const PagedSequence& s : sequences) longest = std::max(longest, s.pos0 + s.n);
  return longest * omp_get_max_threads();
}

void paged_attention_forward(float* out, const float* q, const PagedKV& kv,
                             std::span<const PagedSequence> sequences, int64_t heads,
                             float* scratch) {
  if (heads < 1 || kv.kv_heads < 1 || heads % kv.kv_heads != 0 || kv.head_dim < 1 ||
      kv.block_size < 1)
    fail("paged attention: inconsistent dims (heads ", heads, ", kv_heads ", kv.kv_heads,
         ", head_dim ", kv.head_dim, ", block_size ", kv.block_size, ")");
  check_tables(kv, sequences);
  const int64_t H = heads, D = kv.head_dim, group = heads / kv.kv_heads;
  const int64_t S = int64_t(sequences.size());
  const float scale = 1.0f / std::sqrt(float(D));
  int64_t longest = 1, work = 0;
  for (const PagedSequence& s : sequences) {
    longest = std::max(longest, s.pos0 + s.n);
    work += s.n * (s.pos0 + s.n) * H * D;  // about 2·S·D per query row and head
  }
#pragma omp parallel for collapse(2) schedule(dynamic) if (work >= kMinParallelWork)
  for (int64_t i = 0; i < S; ++i)
    for (int64_t h = 0; h < H; ++h) {
      const PagedSequence& s = sequences[size_t(i)];
      float* p = scratch + omp_get_thread_num() * longest;
      for (int64_t t = 0; t < s.n; ++t) {
        const int64_t row = ((s.row0 + t) * H + h) * D;
        attend_row(out + row, p, q + row, kv, s.table, h / group, s.pos0 + t + 1, scale);
      }
    }
}

}  // namespace bd
