// Host memory: 64-byte aligned allocations, counted so tests can prove a loop allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>

namespace stac {

inline constexpr size_t kHostAlignment = 64;

// Returns 64-byte aligned, uninitialised memory of at least `bytes` (never null; throws stac::Error).
void* host_alloc(size_t bytes);
void host_free(void* p) noexcept;

// Number of host_alloc and cuda_malloc calls since the process started.
uint64_t allocation_count();

}  // namespace stac
