// Shared by the spiking test files: input sweeps, a checked constant-current drive of one neuron,
// sweep failure counting and random spike trains. The reference neuron and quantizer themselves
// live in kernels/cpu/reference.h (stac::ref) beside the other references.
#pragma once

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kernels/cpu/reference.h"
#include "kernels/spiking_math.h"

namespace spiking_test {

namespace spk = stac::spiking;

namespace {

constexpr int64_t kOne = stac::ref::kFixedOne;

inline int64_t clampi(int64_t x, int64_t lo, int64_t hi) { return std::min(std::max(x, lo), hi); }

// Whether u lies within 2^-15 of a tie k + 1/2, where the 16-bit grid decides (see the tie note).
inline bool near_tie(float u) {
    const double d = u;
    if (!std::isfinite(d)) return false;
    return std::fabs(d - std::floor(d) - 0.5) < std::ldexp(1.0, -15);
}

// The site inputs u that test 1 runs: a 1/64 grid over [lo - 3, hi + 3], every tie k + 1/2 and
// its fixed-point neighbourhood, random floats, and the special values.
inline std::vector<float> quantizer_inputs(int lo, int hi, uint64_t seed, int grid = 64) {
    std::vector<float> us;
    for (int i = (lo - 3) * grid; i <= (hi + 3) * grid; ++i) us.push_back(float(i) / float(grid));
    for (int k = lo - 3; k <= hi + 3; ++k) {
        const float tie = float(k) + 0.5f;
        us.push_back(tie);
        us.push_back(std::nextafter(tie, -INFINITY));
        us.push_back(std::nextafter(tie, INFINITY));
        for (float d : {0x1p-18f, 0x1p-17f, 0x1p-16f, 0x3p-17f, 0x2p-16f, 0x3p-16f, 0x1p-15f, 0x1p-14f}) {
            us.push_back(tie + d);
            us.push_back(tie - d);
        }
    }
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> uni(float(lo - 3), float(hi + 3));
    std::normal_distribution<float> wide(0.0f, 1000.0f);
    for (int i = 0; i < 400; ++i) us.push_back(uni(rng));
    for (int i = 0; i < 50; ++i) us.push_back(wide(rng));
    for (float s : {0.0f, -0.0f, 1e30f, -1e30f, INFINITY, -INFINITY, NAN, FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN,
                    std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min(),
                    float(hi) + 1.0f, float(lo) - 1.0f, float(hi) + 0.5f, float(lo) - 0.5f, 2147483648.0f})
        us.push_back(s);
    return us;
}

// One neuron driven S steps by constant_current(U, t, S), checking every step as it goes.
struct ConstantRun {
    int32_t count = 0;
    int pos = 0, neg = 0;       // +1 and -1 spikes
    bool bad_spike = false;     // a spike outside {-1, 0, +1}
    bool out_of_bounds = false; // the count left [lo, hi] after some step
};
// With `spikes`, also counts the steps whose spike differs from spikes[t * stride] (a kernel's train).
inline ConstantRun drive_constant(int32_t U, int S, int lo, int hi, const int8_t* spikes = nullptr, int64_t stride = 0,
                           int64_t* mismatches = nullptr) {
    ConstantRun r;
    int32_t v = spk::kMembraneStart, n = 0;
    for (int t = 0; t < S; ++t) {
        const int32_t s = spk::if_step(v, n, spk::constant_current(U, t, S), lo, hi);
        if (spikes) *mismatches += spikes[t * stride] != s;
        r.bad_spike |= s < -1 || s > 1;
        r.out_of_bounds |= n < lo || n > hi;
        r.pos += s == 1, r.neg += s == -1;
    }
    r.count = n;
    return r;
}

// Counts failures of a sweep and keeps the first one's description, so that one CHECK per sweep
// reports the whole sweep (millions of cases would otherwise be millions of assertions).
struct Failures {
    int64_t n = 0;
    std::string first;
    template <typename... Args> void add(fmt::format_string<Args...> f, Args&&... args) {
        if (n++ == 0) first = fmt::format(f, std::forward<Args>(args)...);
    }
};

// A random spike train of S steps (values -1, 0, +1, at out[s * stride]) summing to c, |c| <= S:
// |c| spikes of c's sign at random steps, and cancelling +1/-1 pairs in about half the rest.
inline void spike_train(int8_t* out, int64_t stride, int S, int c, std::mt19937_64& rng) {
    std::vector<int> pos(static_cast<size_t>(S));
    for (int s = 0; s < S; ++s) pos[size_t(s)] = s;
    std::shuffle(pos.begin(), pos.end(), rng);
    for (int s = 0; s < S; ++s) out[int64_t(s) * stride] = 0;
    const int a = std::abs(c);
    for (int i = 0; i < a; ++i) out[int64_t(pos[size_t(i)]) * stride] = int8_t(c > 0 ? 1 : -1);
    for (int i = a; i + 1 < S; i += 2)
        if (rng() & 1) out[int64_t(pos[size_t(i)]) * stride] = 1, out[int64_t(pos[size_t(i + 1)]) * stride] = -1;
}

inline std::vector<int8_t> random_counts(size_t n, int lo, int hi, std::mt19937_64& rng) {
    std::uniform_int_distribution<int> d(lo, hi);
    std::vector<int8_t> c(n);
    for (auto& x : c) x = int8_t(d(rng));
    return c;
}

inline const int kLevels[] = {1, 2, 3, 4, 7, 8, 15, 16, 31, 63, 127};

inline std::vector<int> timesteps_for(int L) {  // S >= L
    std::vector<int> S = {L, L + 1, 2 * L, 3 * L + 1, 256};
    std::sort(S.begin(), S.end());
    S.erase(std::unique(S.begin(), S.end()), S.end());
    return S;
}

}  // namespace

}  // namespace spiking_test
