// Anonymous memory for what every step streams through (a server's weights, an adapter's packed
// signs): aligned to 2 MiB and advised as transparent huge pages.
//
// A stream crosses a 4 KiB page every 64 cache lines; there the hardware prefetchers stop and a
// TLB miss starts. With 2 MiB pages the same loops read faster on the development VM: a decode
// step of the base alone for 16 tokens 118–122 → 133–138 tokens/s, 16 users' sign products 1.6–2.0
// → 1.3 ms per 5632 × 2048 matrix (docs/serving.md, "Session 17"). The advice needs THP in
// `always` or `madvise` mode; elsewhere the memory is plain pages and only slower.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace bd {

inline constexpr size_t kHugePageBytes = size_t(2) << 20;

struct HugePagesDeleter {
  size_t bytes = 0;
  void operator()(uint8_t* pages) const;  // munmap
};
using HugePages = std::unique_ptr<uint8_t[], HugePagesDeleter>;

// `bytes` (> 0) of zeroed memory starting on a 2 MiB boundary; throws bd::Error naming `what`
// when the system has no room.
HugePages allocate_huge_pages(size_t bytes, const char* what);

}  // namespace bd
