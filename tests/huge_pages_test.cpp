// allocate_huge_pages (core/huge_pages.h): 2 MiB aligned, zeroed, writable, and nothing mapped
// around it (the over-allocation used for the alignment is given back, not leaked).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "core/error.h"
#include "core/huge_pages.h"

namespace bd {
namespace {

// msync fails with ENOMEM on a range that is not mapped.
bool mapped(const uint8_t* address, size_t bytes) {
  return ::msync(const_cast<uint8_t*>(address), bytes, MS_ASYNC) == 0 || errno != ENOMEM;
}

TEST(HugePages, AlignedZeroedWritableAndTrimmed) {
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  for (const size_t bytes : {size_t(1), page, 3 * kHugePageBytes + 12345}) {
    HugePages pages = allocate_huge_pages(bytes, "a test");
    uint8_t* data = pages.get();
    ASSERT_NE(data, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(data) % kHugePageBytes, 0u) << bytes;
    const size_t kept = (bytes + page - 1) / page * page;
    EXPECT_EQ(pages.get_deleter().bytes, kept);
    size_t nonzero = 0;
    for (size_t i = 0; i < kept; ++i) nonzero += data[i] != 0;
    EXPECT_EQ(nonzero, 0u);
    for (size_t i = 0; i < kept; i += 997) data[i] = uint8_t(i);
    EXPECT_EQ(data[kept - 1 - (kept - 1) % 997], uint8_t(kept - 1 - (kept - 1) % 997));
    EXPECT_TRUE(mapped(data, kept));
    EXPECT_FALSE(mapped(data - page, page)) << "the head of the over-allocation stayed mapped";
    EXPECT_FALSE(mapped(data + kept, page)) << "the tail of the over-allocation stayed mapped";
    pages.reset();
    EXPECT_FALSE(mapped(data, kept));
  }
}

TEST(HugePages, NoBytesIsAnError) {
  EXPECT_THROW(allocate_huge_pages(0, "nothing"), Error);
}

}  // namespace
}  // namespace bd
