// configure_host_allocator keeps large blocks on the heap, so a training step reuses memory
// instead of mmap()ing and page-faulting its activations every step.
#include "launch/host_allocator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace difftrain::launch {
namespace {

TEST(HostAllocator, KeepsLargeBlocksOnTheHeap) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  if (std::getenv("GLIBC_TUNABLES") != nullptr ||
      std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr) {
    GTEST_SKIP() << "the environment tunes malloc itself";
  }
  EXPECT_EQ(configure_host_allocator(), "malloc: mmap threshold 32 MB, trim threshold 256 MB");
  const size_t mmapped_blocks = mallinfo2().hblks;
  // 16 MB: above glibc's default 128 kB threshold, below ours.
  void* block = std::malloc(16 << 20);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, 16 << 20);
  EXPECT_EQ(mallinfo2().hblks, mmapped_blocks) << "a 16 MB block was mmap()ed";
  std::free(block);
#else
  GTEST_SKIP() << "needs glibc >= 2.33 (mallinfo2)";
#endif
}

}  // namespace
}  // namespace difftrain::launch
