// Process-wide tuning of the C library's allocator for training: LibTorch's CPU tensors come
// from malloc, and a training step frees and re-allocates the same large activation buffers
// every step.
#pragma once

#include <string>

namespace difftrain::launch {

// With glibc's defaults, blocks above a (dynamic) mmap threshold are mmap()ed and munmap()ed on
// every step, and the heap top is trimmed, so each step page-faults its activations in afresh
// (a DDPM U-Net step on one CPU core spent ~10% of its time there). This keeps blocks up to
// 32 MB on the heap (M_MMAP_THRESHOLD) and up to 256 MB of free heap top (M_TRIM_THRESHOLD), so
// steady-state steps reuse memory. Skipped when the user set glibc's malloc tunables
// (GLIBC_TUNABLES with "malloc.", MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) and on other
// C libraries. Returns what it did, for the start-up log. Call once, early, from one thread.
std::string configure_host_allocator();

}  // namespace difftrain::launch
