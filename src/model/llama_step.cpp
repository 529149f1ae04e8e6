// Inference: one forward step over a batch of sequences with a paged KV cache.
#include <algorithm>
#include <utility>

#include "core/error.h"
#include "kernels/embedding.h"
#include "kernels/paged_attention.h"
#include "kernels/rope.h"
#include "model/llama.h"
#include "model/llama_block.h"

namespace bd {

namespace {

// Attention of a step: RoPE at each row's own position, keys and values into the sequences'
// blocks, queries over them.
class PagedAttention final : public BlockAttention {
 public:
  PagedAttention(const LlamaWeights& weights, const KVBlockPool& pool,
                 std::span<const PagedSequence> sequences, const int64_t* positions, int64_t rows,
                 float* scratch)
      : weights_(weights),
        pool_(pool),
        sequences_(sequences),
        positions_(positions),
        rows_(rows),
        scratch_(scratch) {}

  void attend(int64_t layer, float* att, float* q, float* k_new, float* v_new) const override {
    const LlamaConfig& c = weights_.config;
    const double* inv_freq = weights_.rope_inv_freq.data();
    rope_forward_at(q, inv_freq, rows_, c.num_attention_heads, c.head_dim, positions_);
    rope_forward_at(k_new, inv_freq, rows_, c.num_key_value_heads, c.head_dim, positions_);
    const PagedKV kv = pool_.layer(layer);
    paged_kv_store(kv, k_new, v_new, sequences_);
    paged_attention_forward(att, q, kv, sequences_, c.num_attention_heads, scratch_);
  }

 private:
  const LlamaWeights& weights_;
  const KVBlockPool& pool_;
  std::span<const PagedSequence> sequences_;
  const int64_t* positions_;
  int64_t rows_;
  float* scratch_;
};

// Everything forward_step checks before it changes anything.
void check_step(const LlamaWeights& weights, const KVBlockPool& pool,
                std::span<const StepSequence> sequences) {
  const LlamaConfig& c = weights.config;
  if (pool.layers() != c.num_hidden_layers || pool.kv_heads() != c.num_key_value_heads ||
      pool.head_dim() != c.head_dim)
    fail("forward: the KV cache was made for another model config");
  if (sequences.empty()) fail("forward: a step needs at least one sequence");
  for (const StepSequence& s : sequences) {
    if (s.n <= 0) fail("forward: needs at least one token, got ", s.n);
    if (!s.tokens || !s.kv || !s.logits) fail("forward: a sequence lacks tokens, cache or logits");
    if (s.kv->pos + s.n > c.max_position_embeddings)
      fail("forward: ", s.n, " tokens at position ", s.kv->pos, " exceed the context of ",
           c.max_position_embeddings, " positions");
    if (int64_t(s.kv->blocks.size()) < pool.blocks_for(s.kv->pos + s.n))
      fail("forward: ", s.n, " tokens at position ", s.kv->pos, " need ",
           pool.blocks_for(s.kv->pos + s.n), " KV blocks, the sequence holds ",
           s.kv->blocks.size());
    for (int64_t t = 0; t < s.n; ++t)
      if (s.tokens[t] < 0 || s.tokens[t] >= c.vocab_size)
        fail("token id ", s.tokens[t], " at position ", s.kv->pos + t,
             " is outside the vocabulary [0, ", c.vocab_size, ")");
    if (s.delta && s.delta->linears.size() != size_t(kLinearsPerLayer * c.num_hidden_layers + 1))
      fail("forward: the adapter's delta was made for another model config");
  }
}

// Runs of adjacent sequences with the same adapter and lookup bound, over the rows
// [first .. first + count) of each sequence that `rows_of` selects.
template <typename RowsOf>
void build_segments(std::span<const StepSequence> sequences, RowsOf rows_of,
                    std::vector<RowSegment>& segments) {
  segments.clear();
  int64_t row = 0;
  for (const StepSequence& s : sequences) {
    const int64_t n = rows_of(s);
    if (s.delta) {
      if (!segments.empty() && segments.back().delta == s.delta &&
          segments.back().lookup_max_rows == s.lookup_max_rows &&
          segments.back().row0 + segments.back().rows == row)
        segments.back().rows += n;
      else
        segments.push_back(RowSegment{row, n, s.delta, s.lookup_max_rows});
    }
    row += n;
  }
}

}  // namespace

void forward_step(const LlamaWeights& weights, KVBlockPool& pool,
                  std::span<const StepSequence> sequences, StepScratch& scratch) {
  check_step(weights, pool, sequences);
  flush_denormals_on_pool();
  const LlamaConfig& c = weights.config;
  const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;

  // Rows of the step, and the rows whose logits are wanted.
  int64_t rows = 0, out_rows = 0;
  for (const StepSequence& s : sequences) {
    rows += s.n;
    out_rows += s.all_logits ? s.n : 1;
  }
  build_segments(
      sequences, [](const StepSequence& s) { return s.n; }, scratch.segments);
  build_segments(
      sequences, [](const StepSequence& s) { return s.all_logits ? s.n : 1; },
      scratch.out_segments);
  scratch.tokens.clear();
  scratch.positions.clear();
  scratch.paged.clear();
  for (const StepSequence& s : sequences) {
    const int64_t row = int64_t(scratch.tokens.size());
    scratch.paged.push_back(PagedSequence{row, s.n, s.kv->pos, s.kv->blocks.data()});
    scratch.tokens.insert(scratch.tokens.end(), s.tokens, s.tokens + s.n);
    for (int64_t t = 0; t < s.n; ++t) scratch.positions.push_back(s.kv->pos + t);
  }
  const Segments segments = scratch.segments;

  const bool direct_logits = sequences.size() == 1;  // one sequence: straight into its logits
  const int64_t attention_floats = paged_attention_scratch(scratch.paged);
  const size_t floats =
      size_t(rows * (2 * C + 2 * q_dim + 2 * kv_dim + 2 * F) + C + attention_floats + out_rows * C +
             (direct_logits ? 0 : out_rows * V));
  if (scratch.floats.size() < floats) scratch.floats.resize(floats);
  float* next = scratch.floats.data();
  auto take = [&](int64_t count) { return std::exchange(next, next + count); };
  float* h = take(rows * C);       // residual stream
  float* normed = take(rows * C);  // rmsnorm outputs
  float* q = take(rows * q_dim);
  float* att = take(rows * q_dim);
  float* k_new = take(rows * kv_dim);
  float* v_new = take(rows * kv_dim);
  float* gate = take(rows * F);
  float* up = take(rows * F);
  float* norm_weight = take(C);
  float* attention_scratch = take(attention_floats);
  float* final_in = take(out_rows * C);
  float* logits = direct_logits ? sequences[0].logits : take(out_rows * V);

  embedding_forward(h, scratch.tokens.data(), weights.embed, rows);
  embedding_deltas(h, scratch.tokens.data(), segments, C);

  const PagedAttention attention(weights, pool, scratch.paged, scratch.positions.data(), rows,
                                 attention_scratch);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    // Activations are not kept: one buffer per role, overwritten in place.
    const BlockBuffers buffers{.in = h,
                               .attn_in = normed,
                               .attn_rstd = nullptr,
                               .q = q,
                               .k_new = k_new,
                               .v_new = v_new,
                               .att = att,
                               .mid = h,
                               .mlp_in = normed,
                               .mlp_rstd = nullptr,
                               .gate = gate,
                               .up = up,
                               .act = gate,
                               .out = h,
                               .norm_weight = norm_weight};
    block_forward(l, weights, rows, segments, buffers, attention);
  }

  // The rows whose logits are wanted, gathered, then the final norm and the head over them.
  int64_t row = 0, out_row = 0;
  for (const StepSequence& s : sequences) {
    const int64_t first = s.all_logits ? 0 : s.n - 1, count = s.n - first;
    std::copy_n(h + (row + first) * C, count * C, final_in + out_row * C);
    row += s.n;
    out_row += count;
  }
  norm_forward(final_in, nullptr, final_in, weights.final_norm,
               final_norm_slot(c.num_hidden_layers), out_rows, scratch.out_segments, norm_weight, C,
               float(c.rms_norm_eps));
  linear_forward(logits, final_in, weights.lm_head, out_rows, scratch.out_segments);
  out_row = 0;
  for (const StepSequence& s : sequences) {
    const int64_t count = s.all_logits ? s.n : 1;
    if (!direct_logits) std::copy_n(logits + out_row * V, count * V, s.logits);
    out_row += count;
    s.kv->pos += s.n;
  }
}

void forward(const LlamaWeights& weights, KVCache& cache, const int32_t* tokens, int64_t n,
             float* logits, bool all_logits, const LlamaDelta* delta, int64_t lookup_max_rows) {
  if (n <= 0) fail("forward: needs at least one token, got ", n);
  if (cache.pos() + n > cache.max_seq())
    fail("forward: ", n, " tokens at position ", cache.pos(), " exceed the context of ",
         cache.max_seq(), " positions");
  const StepSequence sequence{.tokens = tokens,
                              .n = n,
                              .kv = &cache.sequence(),
                              .delta = delta,
                              .logits = logits,
                              .all_logits = all_logits,
                              .lookup_max_rows = lookup_max_rows};
  forward_step(weights, cache.pool(), {&sequence, 1}, cache.scratch());
}

}  // namespace bd
