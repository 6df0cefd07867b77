// Threads for the CPU kernels: one process-wide thread count (OpenMP underneath; Eigen's GEMM uses
// the same threads), set by --threads on the command line. parallel_for splits a range into one
// contiguous block per thread, so each thread streams its own part of a weight matrix.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace stac {

// Threads the CPU kernels use (n >= 1). The default is the number of cores OpenMP sees.
void set_num_threads(int n);
int num_threads();
// Whether this build runs kernels on several threads (built with OpenMP).
bool threads_available();

// A non-owning reference to a callable f(begin, end): unlike std::function it never allocates,
// so a decode step can hand lambdas with many captures to parallel_for.
class RangeFn {
public:
    template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, RangeFn>>>
    RangeFn(F&& f)  // NOLINT: converts implicitly, like std::function
        : obj_(const_cast<void*>(static_cast<const void*>(&f))),
          call_([](void* o, int64_t b, int64_t e) { (*static_cast<std::remove_reference_t<F>*>(o))(b, e); }) {}
    void operator()(int64_t b, int64_t e) const { call_(obj_, b, e); }

private:
    void* obj_;
    void (*call_)(void*, int64_t, int64_t);
};

// Calls f(begin, end) on disjoint blocks covering [0, n), one per thread, each a multiple of
// `grain` long except the last. Runs inline when n <= grain or one thread is set. An exception
// thrown by f in any thread is rethrown in the caller.
void parallel_for(int64_t n, int64_t grain, RangeFn f);

}  // namespace stac
