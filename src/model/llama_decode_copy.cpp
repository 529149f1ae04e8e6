// copy_linears_for_decode (model/llama.h): the BF16 linears copied into huge pages for decoding.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/huge_pages.h"
#include "core/mapped_file.h"
#include "kernels/matmul_panels.h"
#include "model/llama.h"

namespace bd {

namespace {

// The bytes of one linear's copy: its panels, or W itself, rounded up to whole cache lines so
// that every copy starts on one (the kernels' vector loads).
int64_t copy_bytes(const Linear& linear, bool panels) {
  const int64_t bytes = panels ? panel_bytes(linear.out_features(), linear.in_features())
                               : int64_t(linear.weight.bytes());
  return (bytes + 63) / 64 * 64;
}

// memcpy on every thread: 2 GB of weights in a fraction of a second.
void copy_on_threads(uint8_t* to, const void* from, size_t bytes) {
  constexpr size_t kChunk = size_t(1) << 20;
  const auto* source = static_cast<const uint8_t*>(from);
  const int64_t chunks = int64_t((bytes + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t begin = size_t(c) * kChunk;
    std::memcpy(to + begin, source + begin, std::min(kChunk, bytes - begin));
  }
}

}  // namespace

int64_t copy_linears_for_decode(LlamaWeights& weights) {
  std::vector<Linear*> linears;
  for (LayerWeights& layer : weights.layers)
    for (Linear* linear :
         {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate, &layer.up, &layer.down})
      if (linear->weight.dtype == DType::BF16) linears.push_back(linear);
  if (weights.lm_head.weight.dtype == DType::BF16) linears.push_back(&weights.lm_head);
  const bool panels = panels_preferred();
  int64_t total = 0;
  for (const Linear* linear : linears) total += copy_bytes(*linear, panels);
  if (total == 0) return 0;
  HugePages pages = allocate_huge_pages(size_t(total), "the weights' copy for decoding");
  uint8_t* next = pages.get();
  for (Linear* linear : linears) {
    const void* mapped = linear->weight.data;
    if (panels) {
      pack_panels(linear->weight, reinterpret_cast<uint32_t*>(next));
      linear->panels = reinterpret_cast<const uint32_t*>(next);
    } else {
      copy_on_threads(next, mapped, linear->weight.bytes());
      linear->weight.data = next;
    }
    // Every product with this linear now reads the copy: the checkpoint's pages go back to the
    // page cache (a no-op for memory that is not a mapped file; with panels, a path that still
    // reads W, e.g. training, faults them in again).
    MappedFile::drop_pages(mapped, linear->weight.bytes());
    next += copy_bytes(*linear, panels);
  }
  weights.decode_copy = std::shared_ptr<uint8_t[]>(std::move(pages));
  return total;
}

}  // namespace bd
