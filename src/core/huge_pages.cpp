#include "core/huge_pages.h"

#include <sys/mman.h>
#include <unistd.h>

#include "core/error.h"

namespace bd {

void HugePagesDeleter::operator()(uint8_t* pages) const {
  if (pages) ::munmap(pages, bytes);
}

HugePages allocate_huge_pages(size_t bytes, const char* what) {
  if (bytes == 0) fail("allocate_huge_pages: no bytes for ", what);
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  const size_t kept = (bytes + page - 1) / page * page;
  // Mapped 2 MiB larger, then trimmed to the aligned part: Linux before 6.7 aligns only mappings
  // it backs by huge pages from the start, and a misaligned head would stay in small pages.
  void* raw = ::mmap(nullptr, kept + kHugePageBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) fail("cannot allocate ", bytes, " bytes for ", what);
  auto* first = static_cast<uint8_t*>(raw);
  const uintptr_t address = reinterpret_cast<uintptr_t>(first);
  auto* aligned =
      reinterpret_cast<uint8_t*>((address + kHugePageBytes - 1) & ~(kHugePageBytes - 1));
  const size_t head = size_t(aligned - first);  // whole pages: mmap returns page-aligned memory
  if (head > 0) ::munmap(first, head);
  if (head < kHugePageBytes) ::munmap(aligned + kept, kHugePageBytes - head);
  ::madvise(aligned, kept, MADV_HUGEPAGE);  // advice: refused where THP is off
  return HugePages(aligned, HugePagesDeleter{kept});
}

}  // namespace bd
