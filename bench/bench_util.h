// Timing helpers for the bench programs: warm-up, repeats, median / min / max.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace stac::bench {

struct Timing {
    double median = 0, min = 0, max = 0;  // seconds
    int repeats = 0;
};

// Median, min and max of timed runs (at least one).
inline Timing summarize(std::vector<double> t) {
    std::sort(t.begin(), t.end());
    Timing r;
    r.repeats = int(t.size());
    r.min = t.front();
    r.max = t.back();
    r.median = t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
    return r;
}

// Runs f() `warmup` times untimed, then `repeats` times timed.
template <typename F>
Timing time_it(F&& f, int warmup, int repeats) {
    for (int i = 0; i < warmup; ++i) f();
    std::vector<double> t;
    for (int i = 0; i < repeats; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        f();
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return summarize(std::move(t));
}

}  // namespace stac::bench
