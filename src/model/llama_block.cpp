#include "model/llama_block.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "core/error.h"
#include "kernels/embedding.h"
#include "kernels/rmsnorm.h"
#include "kernels/swiglu.h"

namespace bd {

void flush_denormals_on_pool() {
#if defined(__x86_64__) || defined(__i386__)
#pragma omp parallel
  _mm_setcsr(_mm_getcsr() | 0x8040);  // FTZ (bit 15) | DAZ (bit 6)
#endif
}

void check_segments(Segments segments, int64_t rows) {
  int64_t end = 0;
  for (const RowSegment& s : segments) {
    if (s.row0 < end || s.rows < 0 || s.row0 + s.rows > rows)
      fail("row segments must lie in [0, ", rows, ") in ascending order; got rows ", s.row0, " .. ",
           s.row0 + s.rows);
    end = s.row0 + s.rows;
  }
}

const float* segment_norm_weight(const TensorView& base, int64_t slot, const LlamaDelta* delta,
                                 float* weight_scratch) {
  if (!delta || !delta->norm(slot).data) return base.as<float>();
  const TensorView& d = delta->norm(slot);
  const int64_t C = base.numel();
  to_f32(d.dtype, d.data, weight_scratch, size_t(C));
  const float* w = base.as<float>();
  for (int64_t c = 0; c < C; ++c) weight_scratch[c] += w[c];
  return weight_scratch;
}

void norm_forward(float* out, float* inv_rms, const float* in, const TensorView& base, int64_t slot,
                  int64_t rows, Segments segments, float* weight_scratch, int64_t C, float eps) {
  // Rows outside every segment (and segments without this norm's delta) use the base weight;
  // consecutive rows of one weight go to the kernel together.
  int64_t done = 0;
  auto run = [&](int64_t end, const float* weight) {
    if (end <= done) return;
    rmsnorm_forward(out + done * C, inv_rms ? inv_rms + done : nullptr, in + done * C, weight,
                    end - done, C, eps);
    done = end;
  };
  for (const RowSegment& s : segments) {
    if (!s.delta || !s.delta->norm(slot).data) continue;
    run(s.row0, base.as<float>());
    run(s.row0 + s.rows, segment_norm_weight(base, slot, s.delta, weight_scratch));
  }
  run(rows, base.as<float>());
}

void embedding_deltas(float* h, const int32_t* tokens, Segments segments, int64_t C) {
  for (const RowSegment& s : segments)
    if (s.delta && s.delta->embed.data)
      embedding_accumulate(h + s.row0 * C, tokens + s.row0, s.delta->embed, s.rows);
}

void block_forward(int64_t layer, const LlamaWeights& weights, int64_t rows, Segments segments,
                   const BlockBuffers& b, const BlockAttention& attention) {
  const LlamaConfig& c = weights.config;
  const LayerWeights& w = weights.layers[size_t(layer)];
  const int64_t C = c.hidden_size;
  const float eps = float(c.rms_norm_eps);

  norm_forward(b.attn_in, b.attn_rstd, b.in, w.attn_norm, attn_norm_slot(layer), rows, segments,
               b.norm_weight, C, eps);
  linear_forward(b.q, b.attn_in, w.q, rows, segments);
  linear_forward(b.k_new, b.attn_in, w.k, rows, segments);
  linear_forward(b.v_new, b.attn_in, w.v, rows, segments);
  attention.attend(layer, b.att, b.q, b.k_new, b.v_new);
  if (b.mid != b.in) std::copy_n(b.in, rows * C, b.mid);
  linear_forward(b.mid, b.att, w.o, rows, segments, /*accumulate=*/true);  // residual

  norm_forward(b.mlp_in, b.mlp_rstd, b.mid, w.mlp_norm, mlp_norm_slot(layer), rows, segments,
               b.norm_weight, C, eps);
  linear_forward(b.gate, b.mlp_in, w.gate, rows, segments);
  linear_forward(b.up, b.mlp_in, w.up, rows, segments);
  swiglu_forward(b.act, b.gate, b.up, rows * c.intermediate_size);
  if (b.out != b.mid) std::copy_n(b.mid, rows * C, b.out);
  linear_forward(b.out, b.act, w.down, rows, segments, /*accumulate=*/true);  // residual
}

}  // namespace bd
