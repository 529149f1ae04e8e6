// attach_panels (model/llama.h): the server's panel copies of its BF16 linears.
#include <sys/mman.h>

#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "kernels/matmul_panels.h"
#include "model/llama.h"

namespace bd {

int64_t attach_panels(LlamaWeights& weights) {
  if (!panels_preferred()) return 0;
  std::vector<Linear*> linears;
  for (LayerWeights& layer : weights.layers)
    for (Linear* linear :
         {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate, &layer.up, &layer.down})
      linears.push_back(linear);
  linears.push_back(&weights.lm_head);
  int64_t total = 0;
  for (const Linear* linear : linears)
    if (linear->weight.dtype == DType::BF16)
      total += panel_bytes(linear->out_features(), linear->in_features());
  if (total == 0) return 0;
  void* pages =
      ::mmap(nullptr, size_t(total), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pages == MAP_FAILED) fail("cannot allocate ", total, " bytes for the weights' panels");
  // Steps stream every panel once: huge pages spare them most TLB misses (advice only).
  ::madvise(pages, size_t(total), MADV_HUGEPAGE);
  weights.panel_storage = std::shared_ptr<const void>(
      pages, [total](const void* p) { ::munmap(const_cast<void*>(p), size_t(total)); });
  auto* next = static_cast<uint8_t*>(pages);
  for (Linear* linear : linears) {
    if (linear->weight.dtype != DType::BF16) continue;
    auto* panels = reinterpret_cast<uint32_t*>(next);
    pack_panels(linear->weight, panels);
    linear->panels = panels;
    // Every product with this linear now reads the panels: the checkpoint's pages go back to
    // the page cache (a no-op for memory that is not a mapped file; a path that still reads
    // them, e.g. training, faults them in again).
    MappedFile::drop_pages(linear->weight.data, linear->weight.bytes());
    next += panel_bytes(linear->out_features(), linear->in_features());
  }
  return total;
}

}  // namespace bd
