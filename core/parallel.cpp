#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>

#include <Eigen/Core>

#include "core/error.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace stac {

namespace {
int g_threads = 0;  // 0: not set yet (the OpenMP default)
}

bool threads_available() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

void set_num_threads(int n) {
    if (n < 1) fail("thread count must be at least 1, got {}", n);
    g_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    Eigen::setNbThreads(n);
}

int num_threads() {
#ifdef _OPENMP
    if (g_threads == 0) return std::max(1, omp_get_max_threads());
    return g_threads;
#else
    return 1;
#endif
}

void parallel_for(int64_t n, int64_t grain, RangeFn f) {
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    const int64_t blocks = (n + grain - 1) / grain;
    const int nt = int(std::min<int64_t>(num_threads(), blocks));
    if (nt <= 1) {
        f(0, n);
        return;
    }
#ifdef _OPENMP
    // Block i gets an equal share of grains; an exception inside a thread is carried out.
    std::exception_ptr error;
    std::atomic<bool> failed{false};
#pragma omp parallel num_threads(nt)
    {
        const int i = omp_get_thread_num();
        const int64_t b0 = blocks * i / nt, b1 = blocks * (i + 1) / nt;
        const int64_t begin = b0 * grain, end = std::min(n, b1 * grain);
        if (begin < end) {
            try {
                f(begin, end);
            } catch (...) {
                if (!failed.exchange(true)) error = std::current_exception();
            }
        }
    }
    if (error) std::rethrow_exception(error);
#else
    f(0, n);
#endif
}

}  // namespace stac
