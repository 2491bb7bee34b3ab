// A caching allocator for libtorch's CPU tensors, for workloads whose big tensors repeat every
// step (training: the same activations, gradients and scratch buffers batch after batch).
//
// Why: glibc hands every allocation above its mmap threshold (at most 32 MB, and 128 KB until it
// adapts) to mmap and returns it with munmap on free, so each batch the kernel maps, zero-fills
// and faults in every large tensor again, 4 KB page by page. In fmam train (stage 2, 256²,
// batch 16) that was about a fifth of all CPU time (page faults and clear_page in the kernel).
// This allocator keeps freed blocks of 1 MiB and more in per-size free lists and gives them back
// on the next request of that size; blocks of 4 MiB and more are 2 MiB aligned and advised for
// transparent huge pages. Smaller requests go to malloc, as with c10's default allocator.
//
// The cache is bounded: a freed block is kept only while the cached (free) bytes stay under
// `max_cached_bytes`; beyond that it is returned to the system at once, so resident memory is at
// most the live tensors plus that bound.
#pragma once

#include <cstddef>

namespace fmam {

struct CpuCacheStats {
  size_t cached_bytes = 0;      // free blocks held now
  size_t hits = 0, misses = 0;  // large requests served from the cache / from the system
};

// Makes the caching allocator libtorch's CPU allocator for the rest of the process (tensors
// allocated before keep their own deleter). Call once, early, before big tensors exist; later
// calls only change the bound.
void install_caching_cpu_allocator(size_t max_cached_bytes);
// The bound FMAM_CPU_CACHE_MB asks for, in bytes (the variable counts MiB), or `default_mb` MiB
// where it is unset or empty; 0 means: do not install. Throws Error naming the variable where it
// is not a whole number in [0, 1048576].
size_t cpu_cache_bound_from_env(size_t default_mb);
// Installs the allocator with cpu_cache_bound_from_env(default_mb), unless that is 0. Returns the
// bound installed (0: not installed).
size_t install_caching_cpu_allocator_from_env(size_t default_mb);
// Gives every cached block back to the system (where the sizes to come change, such as the end
// of a training stage); the next requests fill the cache again.
void release_cached_cpu_blocks();
// Whether it is installed, and its counters.
bool caching_cpu_allocator_installed();
CpuCacheStats caching_cpu_allocator_stats();

}  // namespace fmam
