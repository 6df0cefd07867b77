#include "core/allocator.h"

#include <atomic>
#include <cstdlib>

#include "core/error.h"

namespace stac {

namespace {
std::atomic<uint64_t> g_allocations{0};
}

void* host_alloc(size_t bytes) {
    const size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    void* p = std::aligned_alloc(kHostAlignment, rounded == 0 ? kHostAlignment : rounded);
    if (!p) fail("out of host memory allocating {} bytes", bytes);
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    return p;
}

void host_free(void* p) noexcept { std::free(p); }

uint64_t allocation_count() { return g_allocations.load(std::memory_order_relaxed); }

namespace detail {
void count_allocation() { g_allocations.fetch_add(1, std::memory_order_relaxed); }
}

}  // namespace stac
