// spiking: the fixed-point integrate-and-fire neuron, the site quantizer and the CPU spiking kernels,
// each against plain reference loops written in this file or a mathematical invariant (DESIGN §5).
// Letters: T tokens, N neurons per token, K inputs, S timesteps, H heads, D head dim, C = H * D,
// P cached tokens, Lk = P + T keys, cap cache capacity; L is a site's number of levels.
//
// Tie handling, everywhere below: the quantizer rounds u = x / s half up, clamp(floor(u + 1/2)),
// on the shared 16-bit fixed-point grid (U = to_fixed(u), within 2^-17 of u). An input within
// 2^-17 of a tie k + 1/2 may therefore land on the tie and round up; both the QANN and the SNN see
// the same U, so they agree there too. The tests compare against the exact real-number rounding
// only when u is farther than 2^-15 from every tie, and against quant_count_fixed(U) always.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "convert/spiking_gpt2.h"
#include "kernels/cpu/spiking.h"
#include "kernels/kernels.h"
#include "kernels/spiking.h"
#include "kernels/spiking_math.h"

using namespace stac;
namespace spk = stac::spiking;

namespace {

constexpr int64_t kOne = int64_t(1) << 16;

// floor(a / b) for b > 0 (C++ division truncates toward zero).
int64_t floor_div(int64_t a, int64_t b) {
    const int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}
int64_t clampi(int64_t x, int64_t lo, int64_t hi) { return std::min(std::max(x, lo), hi); }

// The quantizer by definition, in double (exact for every float u): clamp(floor(u + 1/2)); NaN: 0.
int64_t round_clamp(float u, int64_t lo, int64_t hi) {
    const double d = u;
    if (std::isnan(d)) return 0;
    const double r = std::floor(d + 0.5);
    return r < double(lo) ? lo : (r > double(hi) ? hi : int64_t(r));
}

// Whether u lies within 2^-15 of a tie k + 1/2, where the 16-bit grid decides (see the tie note).
bool near_tie(float u) {
    const double d = u;
    if (!std::isfinite(d)) return false;
    return std::fabs(d - std::floor(d) - 0.5) < std::ldexp(1.0, -15);
}

// Step t of S of a constant current totalling U, by definition: floor((t+1)U/S) - floor(tU/S).
int64_t ref_current(int64_t U, int64_t t, int64_t S) { return floor_div(U * (t + 1), S) - floor_div(U * t, S); }

// float u -> fixed point for currents that are not clamped (|u| well inside 2^14): the nearest
// multiple of 2^-16, ties to even (the default rounding mode of nearbyint).
int64_t ref_fixed(float u) { return int64_t(std::nearbyint(double(u) * double(kOne))); }

// DESIGN §5's neuron, line by line, in int64 without saturation: the reference for if_step.
struct RefNeuron {
    int64_t v = kOne / 2, n = 0;
    int64_t lo, hi;
    RefNeuron(int64_t lo_, int64_t hi_) : lo(lo_), hi(hi_) {}
    int step(int64_t I) {
        v += I;
        if (v >= kOne && n < hi) {
            v -= kOne, n += 1;
            return +1;
        }
        if (v < 0 && n > lo) {
            v += kOne, n -= 1;
            return -1;
        }
        return 0;
    }
    // Settled: the count is the quantizer of everything received, clamp(floor(sum + 1/2)). Since
    // v + n * kOne = kOne/2 + sum(I) at all times, that holds exactly when v is in [0, kOne), or
    // the count is stuck at a bound with the membrane beyond it.
    bool settled() const { return (v >= 0 && v < kOne) || (n == hi && v >= kOne) || (n == lo && v < 0); }
};

// The site inputs u that test 1 runs: a 1/64 grid over [lo - 3, hi + 3], every tie k + 1/2 and
// its fixed-point neighbourhood, random floats, and the special values.
std::vector<float> quantizer_inputs(int lo, int hi, uint64_t seed, int grid = 64) {
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
ConstantRun drive_constant(int32_t U, int S, int lo, int hi, const int8_t* spikes = nullptr, int64_t stride = 0,
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
void spike_train(int8_t* out, int64_t stride, int S, int c, std::mt19937_64& rng) {
    std::vector<int> pos(static_cast<size_t>(S));
    for (int s = 0; s < S; ++s) pos[size_t(s)] = s;
    std::shuffle(pos.begin(), pos.end(), rng);
    for (int s = 0; s < S; ++s) out[int64_t(s) * stride] = 0;
    const int a = std::abs(c);
    for (int i = 0; i < a; ++i) out[int64_t(pos[size_t(i)]) * stride] = int8_t(c > 0 ? 1 : -1);
    for (int i = a; i + 1 < S; i += 2)
        if (rng() & 1) out[int64_t(pos[size_t(i)]) * stride] = 1, out[int64_t(pos[size_t(i + 1)]) * stride] = -1;
}

std::vector<int8_t> random_counts(size_t n, int lo, int hi, std::mt19937_64& rng) {
    std::uniform_int_distribution<int> d(lo, hi);
    std::vector<int8_t> c(n);
    for (auto& x : c) x = int8_t(d(rng));
    return c;
}

const int kLevels[] = {1, 2, 3, 4, 7, 8, 15, 16, 31, 63, 127};

std::vector<int> timesteps_for(int L) {  // S >= L
    std::vector<int> S = {L, L + 1, 2 * L, 3 * L + 1, 256};
    std::sort(S.begin(), S.end());
    S.erase(std::unique(S.begin(), S.end()), S.end());
    return S;
}

}  // namespace

// ---------------------------------------------------------------- 1. neuron = quantizer

TEST_CASE("spiking: neuron count after S >= L steps of constant current equals the quantizer") {
    for (int L : kLevels)
        for (bool is_signed : {false, true}) {
            const int lo = is_signed ? -L : 0, hi = L;
            const auto us = quantizer_inputs(lo, hi, uint64_t(L * 2 + is_signed));
            // U, the quantizer's count and the exact rounding depend on u only: compute them once.
            std::vector<int32_t> Us(us.size()), qs(us.size());
            Failures grid, exact;
            for (size_t i = 0; i < us.size(); ++i) {
                const float u = us[i];
                Us[i] = spk::to_fixed(u, lo, hi);
                qs[i] = spk::quant_count_fixed(Us[i], lo, hi);
                // to_fixed: within half a unit of u clamped to [lo - 1, hi + 1]; NaN gives 0.
                const double uc = std::isnan(u) ? 0.0 : std::clamp(double(u), double(lo - 1), double(hi + 1));
                if (std::fabs(double(Us[i]) - uc * double(kOne)) > 0.5) grid.add("to_fixed({}) = {}", u, Us[i]);
                if (spk::quant_count(u, lo, hi) != qs[i]) grid.add("quant_count({}) != quant_count_fixed", u);
                const int64_t want = round_clamp(u, lo, hi);
                if (!near_tie(u) && qs[i] != want) exact.add("u {} [{}, {}]: quantizer {} expected {}", u, lo, hi, qs[i], want);
                // Near a tie the grid may round either way, but only to one of the two neighbours.
                if (near_tie(u) && qs[i] != clampi(int64_t(std::floor(double(u))), lo, hi) &&
                    qs[i] != clampi(int64_t(std::floor(double(u))) + 1, lo, hi))
                    exact.add("u {} near a tie: quantizer {}", u, qs[i]);
            }
            CHECK_MESSAGE(grid.n == 0, grid.first);
            CHECK_MESSAGE(exact.n == 0, exact.first);
            // The layer-wise CPU kernel on the same inputs (one row, inv = 1): counts [1, M], spikes [S, 1, M].
            const int64_t M = int64_t(us.size());
            const float one = 1.0f;
            std::vector<int8_t> kcounts(us.size());
            for (int S : timesteps_for(L)) {
                std::vector<int8_t> kspikes(size_t(S) * us.size());
                cpu::neurons_layerwise(kcounts.data(), kspikes.data(), us.data(), 1, M, &one, false, lo, hi, S);
                Failures f;
                for (size_t i = 0; i < us.size(); ++i) {
                    int64_t mism = 0;
                    const ConstantRun r = drive_constant(Us[i], S, lo, hi, kspikes.data() + i, M, &mism);
                    const int32_t q = qs[i];
                    if (r.count != q) f.add("L {} S {} [{}, {}] u {}: count {} quantizer {}", L, S, lo, hi, us[i], r.count, q);
                    if (kcounts[i] != q || mism != 0)
                        f.add("L {} S {} [{}, {}] u {}: cpu::neurons_layerwise count {} quantizer {}, {} spikes differ", L, S, lo,
                              hi, us[i], kcounts[i], q, mism);
                    if (r.bad_spike || r.out_of_bounds) f.add("L {} S {} u {}: spike or count out of range", L, S, us[i]);
                    // Constant current never overshoots: every spike has the count's sign, |q| in all.
                    if (r.pos != std::max(q, 0) || r.neg != std::max(-q, 0))
                        f.add("L {} S {} u {}: {} +1 and {} -1 spikes for count {}", L, S, us[i], r.pos, r.neg, q);
                }
                CHECK_MESSAGE(f.n == 0, f.first);
            }
        }
}

TEST_CASE("spiking: neuron equals the quantizer for every fixed-point input at small L") {
    // Every U in [(lo - 1) kOne, (hi + 1) kOne], the whole range to_fixed can produce.
    for (int L : {1, 2, 3, 4})
        for (bool is_signed : {false, true}) {
            const int lo = is_signed ? -L : 0, hi = L;
            for (int S : {L, L + 1, 2 * L + 1}) {
                Failures f;
                for (int64_t U = (lo - 1) * kOne; U <= (hi + 1) * kOne; ++U) {
                    const int64_t want = clampi(floor_div(U + kOne / 2, kOne), lo, hi);
                    if (spk::quant_count_fixed(int32_t(U), lo, hi) != want) f.add("quant_count_fixed({})", U);
                    const ConstantRun r = drive_constant(int32_t(U), S, lo, hi);
                    if (r.count != want || r.pos != std::max<int64_t>(want, 0) || r.neg != std::max<int64_t>(-want, 0))
                        f.add("L {} S {} [{}, {}] U {}: count {} expected {}", L, S, lo, hi, U, r.count, want);
                }
                CHECK_MESSAGE(f.n == 0, f.first);
            }
        }
}

// ---------------------------------------------------------------- 2. constant current

TEST_CASE("spiking: constant_current sums exactly to U with steps in [floor(U/S), ceil(U/S)]") {
    std::mt19937_64 rng(21);
    std::uniform_int_distribution<int32_t> any(INT32_MIN, INT32_MAX);
    std::uniform_int_distribution<int32_t> site(-128 * int32_t(kOne), 128 * int32_t(kOne));
    Failures f;
    int64_t cases = 0;
    for (int S : {1, 2, 3, 5, 7, 8, 16, 31, 64, 127, 128, 255, 256, 382, 1000, 4097}) {
        std::vector<int32_t> Us = {0, 1, -1, S - 1, -(S - 1), S, -S, S + 1, -(S + 1), INT32_MAX, INT32_MIN, INT32_MIN + 1};
        for (int i = 0; i < 100; ++i) Us.push_back(any(rng)), Us.push_back(site(rng)), Us.push_back(int32_t(rng() % 4096) - 2048);
        for (int32_t U : Us) {
            const int64_t fl = floor_div(U, S), cl = fl + (int64_t(U) % S != 0);
            int64_t sum = 0;
            for (int t = 0; t < S; ++t) {
                const int64_t I = spk::constant_current(U, t, S);
                if (I < fl || I > cl) f.add("U {} S {} t {}: {} outside [{}, {}]", U, S, t, I, fl, cl);
                sum += I;
            }
            if (sum != U) f.add("U {} S {}: steps sum to {}", U, S, sum);
            ++cases;
        }
    }
    CHECK(cases == 16 * 312);
    CHECK_MESSAGE(f.n == 0, f.first);
}

// ---------------------------------------------------------------- 3. S < L

TEST_CASE("spiking: with S < L the count saturates at +-S") {
    // At most one spike per step: the count is the quantizer clamped further to [-S, S]. (A
    // current above one threshold per step makes the neuron fire every step.)
    for (int L : {2, 4, 8, 16, 127})
        for (bool is_signed : {false, true}) {
            const int lo = is_signed ? -L : 0, hi = L;
            const auto us = quantizer_inputs(lo, hi, uint64_t(100 + L), 16);
            std::vector<int> Ss = {1, 2, 3, L / 2, L - 1};
            std::sort(Ss.begin(), Ss.end());
            Ss.erase(std::unique(Ss.begin(), Ss.end()), Ss.end());
            for (int S : Ss) {
                if (S < 1 || S >= L) continue;
                const int64_t slo = std::max(lo, -S), shi = std::min(hi, S);
                Failures f;
                int64_t saturated = 0;
                for (float u : us) {
                    const int32_t U = spk::to_fixed(u, lo, hi);
                    const ConstantRun r = drive_constant(U, S, lo, hi);
                    const int64_t want = near_tie(u) ? clampi(spk::quant_count_fixed(U, lo, hi), slo, shi) : round_clamp(u, slo, shi);
                    if (r.count != want) f.add("L {} S {} [{}, {}] u {}: count {} expected {}", L, S, lo, hi, u, r.count, want);
                    if (r.pos + r.neg != std::abs(r.count)) f.add("L {} S {} u {}: opposite spikes", L, S, u);
                    saturated += r.count == shi && spk::quant_count_fixed(U, lo, hi) > shi;
                }
                CHECK_MESSAGE(f.n == 0, f.first);
                CHECK(saturated > 0);  // the clamp at S really happened
            }
        }
}

// ---------------------------------------------------------------- 4. streaming dynamics

TEST_CASE("spiking: if_step equals DESIGN's neuron on random mixed-sign currents") {
    std::mt19937_64 rng(4);
    int64_t minus = 0, plus = 0;
    Failures f;
    for (int trial = 0; trial < 600; ++trial) {
        const int L = kLevels[trial % 11];
        const int lo = (trial / 11) % 2 ? -L : 0, hi = L;
        // |I| <= 3 thresholds for 200 steps: |v| stays below 2^26, far from the saturation at 2^30.
        const int64_t amp = trial % 3 == 0 ? kOne / 3 : 3 * kOne;
        std::uniform_int_distribution<int64_t> cur(-amp, amp);
        int32_t v = spk::kMembraneStart, n = 0;
        RefNeuron ref(lo, hi);
        for (int t = 0; t < 200; ++t) {
            const int64_t I = cur(rng);
            const int s = spk::if_step(v, n, int32_t(I), lo, hi), rs = ref.step(I);
            if (s != rs || v != ref.v || n != ref.n) {
                f.add("trial {} step {}: kernel ({}, {}, {}) reference ({}, {}, {})", trial, t, s, v, n, rs, ref.v, ref.n);
                break;
            }
            minus += s < 0, plus += s > 0;
        }
    }
    CHECK_MESSAGE(f.n == 0, f.first);
    CHECK(minus > 1000);
    CHECK(plus > 1000);
}

TEST_CASE("spiking: currents of at most one threshold per step keep the count equal to the running quantizer") {
    // The slow-enough condition: a settled neuron (RefNeuron::settled) receiving |I_t| <= kOne
    // stays settled, so after every step n_t = clamp(floor(sum_{<=t} I / kOne + 1/2)). -1 spikes
    // then undo exactly what the running sum gave back.
    std::mt19937_64 rng(44);
    Failures f;
    int64_t minus = 0;
    for (int trial = 0; trial < 400; ++trial) {
        const int L = kLevels[trial % 11];
        const int lo = trial % 2 ? -L : 0, hi = L;
        std::uniform_int_distribution<int64_t> cur(-kOne, kOne);
        int32_t v = spk::kMembraneStart, n = 0;
        int64_t sum = 0;
        for (int t = 0; t < 300; ++t) {
            // the extremes +-kOne on purpose now and then
            const int64_t I = t % 17 == 5 ? kOne : (t % 19 == 7 ? -kOne : cur(rng) + (trial % 5 == 0 ? kOne / 4 : 0)) ;
            const int64_t Ic = clampi(I, -kOne, kOne);
            sum += Ic;
            minus += spk::if_step(v, n, int32_t(Ic), lo, hi) < 0;
            const int64_t want = clampi(floor_div(sum + kOne / 2, kOne), lo, hi);
            if (n != want) {
                f.add("trial {} step {} [{}, {}]: count {} expected {} (sum {})", trial, t, lo, hi, n, want, sum);
                break;
            }
        }
    }
    CHECK_MESSAGE(f.n == 0, f.first);
    CHECK(minus > 1000);
}

TEST_CASE("spiking: negative spikes undo an overshoot once the neuron has settled") {
    const int lo = -8, hi = 8;
    auto fx = [](double x) { return int64_t(std::llround(x * double(kOne))); };
    SUBCASE("a big early current, then a slow decline") {
        // I: +6.2, five quiet steps (the count climbs to 6, one spike per step), then -0.8 x 5.
        // Total 2.2: the count must come back to 2 with -1 spikes.
        std::vector<int64_t> I = {fx(6.2), 0, 0, 0, 0, 0, fx(-0.8), fx(-0.8), fx(-0.8), fx(-0.8), fx(-0.8)};
        int32_t v = spk::kMembraneStart, n = 0;
        RefNeuron ref(lo, hi);
        std::vector<int> counts, spikes;
        int64_t sum = 0;
        for (int64_t i : I) {
            const int s = spk::if_step(v, n, int32_t(i), lo, hi);
            CHECK(s == ref.step(i));
            CHECK(v == ref.v);
            spikes.push_back(s), counts.push_back(n), sum += i;
        }
        CHECK(counts == std::vector<int>{1, 2, 3, 4, 5, 6, 5, 5, 4, 3, 2});
        CHECK(std::count(spikes.begin(), spikes.end(), -1) == 4);
        CHECK(*std::max_element(counts.begin(), counts.end()) == 6);
        CHECK(n == clampi(floor_div(sum + kOne / 2, kOne), lo, hi));
        CHECK(n == 2);
    }
    SUBCASE("an unsettled neuron needs exactly |target - n| quiet steps") {
        // v + n kOne = kOne/2 + sum I holds throughout, so after the drive the count is m = |target - n|
        // spikes away from target = clamp(floor(sum / kOne + 1/2)); a zero-current step moves it
        // one spike closer (v outside [0, kOne) with the count free to move) and never past.
        // Hence: the count after the drive plus R quiet steps is exact iff R >= m.
        std::mt19937_64 rng(46);
        std::uniform_int_distribution<int64_t> big(-12 * kOne, 12 * kOne);
        Failures f;
        int64_t unsettled = 0, overshoots = 0;
        for (int trial = 0; trial < 2000; ++trial) {
            const bool is_signed = trial % 2;
            const int l = is_signed ? lo : 0;
            int32_t v = spk::kMembraneStart, n = 0;
            int64_t sum = 0, peak = 0;
            const int steps = 1 + trial % 6;
            for (int t = 0; t < steps; ++t) {
                const int64_t I = big(rng);
                sum += I;
                spk::if_step(v, n, int32_t(I), l, hi);
                peak = std::max<int64_t>(peak, n);
            }
            const int64_t target = clampi(floor_div(sum + kOne / 2, kOne), l, hi);
            const int64_t m = std::abs(target - n);
            unsettled += m > 0;
            int64_t neg = 0;
            for (int64_t r = 0; r < m + 3; ++r) {
                if (n == target && r < m) f.add("trial {}: exact after {} of {} quiet steps", trial, r, m);
                neg += spk::if_step(v, n, 0, l, hi) < 0;
                if (std::abs(target - n) != std::max<int64_t>(m - r - 1, 0))
                    f.add("trial {}: after {} quiet steps count {} target {} (m {})", trial, r + 1, n, target, m);
            }
            overshoots += neg > 0 && peak > target;
        }
        CHECK_MESSAGE(f.n == 0, f.first);
        CHECK(unsettled > 500);
        CHECK(overshoots > 50);
    }
}

TEST_CASE("spiking: a membrane driven past its bound saturates instead of overflowing") {
    // The kernel's documented saturation: v = clamp(v + I, +-kMembraneLimit), then the spike rule.
    // The reference does the sum in int64, so an int32 wrap-around in the kernel would show.
    const int64_t lim = spk::kMembraneLimit;
    std::mt19937_64 rng(5);
    std::uniform_int_distribution<int32_t> any(INT32_MIN, INT32_MAX);
    Failures f;
    for (bool is_signed : {false, true}) {
        const int lo = is_signed ? -8 : 0, hi = 8;
        int32_t v = spk::kMembraneStart, n = 0;
        int64_t rv = kOne / 2, rn = 0;
        auto both = [&](int64_t I, int step) {
            const int s = spk::if_step(v, n, int32_t(I), lo, hi);
            rv = clampi(rv + I, -lim, lim);
            int rs = 0;
            if (rv >= kOne && rn < hi) rv -= kOne, ++rn, rs = 1;
            else if (rv < 0 && rn > lo) rv += kOne, --rn, rs = -1;
            if (s != rs || v != rv || n != rn || v > lim || v < -lim)
                f.add("step {} I {}: kernel ({}, {}, {}) reference ({}, {}, {})", step, I, s, v, n, rs, rv, rn);
        };
        for (int t = 0; t < 100; ++t) both(INT32_MAX, t);
        CHECK(v == lim);
        CHECK(n == hi);
        for (int t = 0; t < 100; ++t) both(INT32_MIN, 100 + t);
        CHECK(v == -lim);
        CHECK(n == lo);
        for (int t = 0; t < 2000; ++t) both(any(rng), 200 + t);
        for (int t = 0; t < 50; ++t) both(int64_t(any(rng)) / 1024, 2200 + t);
    }
    CHECK_MESSAGE(f.n == 0, f.first);
}

// ---------------------------------------------------------------- 5. CPU kernels

TEST_CASE("spiking: cpu::quantize and cpu::neurons_layerwise against reference loops") {
    std::mt19937_64 rng(50);
    const int64_t T = 5, N = 37;
    for (int L : {1, 4, 8, 127})
        for (bool is_signed : {false, true})
            for (bool per_col : {false, true}) {
                const int lo = is_signed ? -L : 0, hi = L;
                // inv: [N] or [1]; x: [T, N] spread over about [lo - 2, hi + 2] thresholds.
                std::vector<float> inv(per_col ? size_t(N) : 1);
                std::uniform_real_distribution<float> iv(0.5f, 8.0f);
                for (auto& i : inv) i = iv(rng);
                std::vector<float> x(size_t(T * N));
                std::uniform_real_distribution<float> ud(float(lo - 2), float(hi + 2));
                for (int64_t k = 0; k < T * N; ++k) x[size_t(k)] = ud(rng) / inv[per_col ? size_t(k % N) : 0];
                x[3] = NAN, x[4] = INFINITY, x[5] = -INFINITY, x[6] = 0.0f, x[7] = -0.0f, x[8] = 1e30f;
                auto u_of = [&](int64_t k) { return x[size_t(k)] * inv[per_col ? size_t(k % N) : 0]; };

                std::vector<int8_t> q(size_t(T * N));
                cpu::quantize(q.data(), x.data(), T, N, inv.data(), per_col, lo, hi);
                Failures fq;
                for (int64_t k = 0; k < T * N; ++k) {
                    const float u = u_of(k);
                    const int64_t want = near_tie(u) ? spk::quant_count(u, lo, hi) : round_clamp(u, lo, hi);
                    if (q[size_t(k)] != want) fq.add("L {} k {} u {}: {} expected {}", L, k, u, q[size_t(k)], want);
                }
                CHECK_MESSAGE(fq.n == 0, fq.first);

                for (int S : {1, 2, L, L + 3, 2 * L + 1}) {
                    // spikes: [S, T, N]
                    std::vector<int8_t> counts(size_t(T * N), 99), counts2(size_t(T * N), 99), spikes(size_t(S * T * N), 99);
                    const int64_t ev = cpu::neurons_layerwise(counts.data(), spikes.data(), x.data(), T, N, inv.data(), per_col, lo, hi, S);
                    const int64_t ev2 = cpu::neurons_layerwise(counts2.data(), nullptr, x.data(), T, N, inv.data(), per_col, lo, hi, S);
                    CHECK(counts == counts2);
                    CHECK(ev == ev2);
                    Failures f;
                    int64_t events = 0;
                    for (int64_t k = 0; k < T * N; ++k) {
                        // reference: DESIGN's neuron on the defined constant current of U = to_fixed(u)
                        const int64_t U = spk::to_fixed(u_of(k), lo, hi);
                        RefNeuron ref(lo, hi);
                        int64_t sum = 0;
                        for (int s = 0; s < S; ++s) {
                            const int rs = ref.step(ref_current(U, s, S));
                            const int8_t ks = spikes[size_t(s * T * N + k)];
                            if (ks != rs) f.add("L {} S {} k {} step {}: spike {} expected {}", L, S, k, s, ks, rs);
                            sum += ks, events += ks != 0;
                        }
                        if (counts[size_t(k)] != ref.n || sum != counts[size_t(k)])
                            f.add("L {} S {} k {}: count {} spikes sum {} reference {}", L, S, k, counts[size_t(k)], sum, ref.n);
                        const int64_t want = S >= L ? q[size_t(k)] : clampi(q[size_t(k)], -S, S);
                        if (counts[size_t(k)] != want) f.add("L {} S {} k {}: count {} quantizer {}", L, S, k, counts[size_t(k)], want);
                    }
                    CHECK_MESSAGE(f.n == 0, f.first);
                    CHECK(ev == events);
                }
            }
}

TEST_CASE("spiking: cpu::neurons_step follows DESIGN's neuron on the running input") {
    // Streaming: membranes are doubles in units of the threshold (start 0.5, fire at 1), and each
    // step adds I_t = increment * inv whatever the site's bounds: a step may give back more than
    // one threshold (the temporal difference of GELU into an unsigned site, say). Checked against
    // DESIGN's neuron in double, and against charge conservation, v + n = 1/2 + sum I, which makes
    // the count track the running quantizer clamp(floor(sum I + 1/2)) whenever the neuron is
    // settled (see RefNeuron::settled); quiet steps at the end settle every neuron.
    std::mt19937_64 rng(55);
    const int64_t T = 3, N = 17, TN = T * N;
    for (int L : {1, 4, 8, 127})
        for (bool is_signed : {false, true})
            for (bool per_col : {false, true}) {
                const int lo = is_signed ? -L : 0, hi = L;
                // Powers of two, so that column 0's increments, multiples of 1/4 threshold, reach the
                // membrane exactly and hit the firing edges v == 1 and v == 0 on the dot.
                std::vector<float> inv(per_col ? size_t(N) : 1);
                for (auto& i : inv) i = std::ldexp(1.0f, int(rng() % 5) - 2);
                // v, n, spikes, inc: [T, N]
                std::vector<double> v(size_t(TN), 0.5), rv(size_t(TN), 0.5), sum(size_t(TN), 0.0);
                std::vector<int32_t> n(size_t(TN), 0), rn(size_t(TN), 0);
                std::vector<int8_t> spikes(static_cast<size_t>(TN));
                std::vector<float> inc(static_cast<size_t>(TN));
                std::uniform_real_distribution<float> small(-1.2f, 1.2f), large(-20.0f, 20.0f);
                Failures f;
                int64_t minus = 0, tracked = 0;
                const int drive = 60, quiet = 2 * L + 1;  // a count is at most hi - lo spikes from its target
                for (int step = 0; step < drive + quiet; ++step) {
                    for (int64_t k = 0; k < TN; ++k) {
                        float u = step >= drive ? 0.0f : (step % 4 == 3 ? large(rng) : small(rng)) + (step < 10 ? 0.7f : 0.0f);
                        if (k % N == 0 && step < drive) u = float(int(rng() % 9) - 4) * 0.25f;
                        inc[size_t(k)] = u / inv[per_col ? size_t(k % N) : 0];
                    }
                    if (step == 5) inc[0] = NAN;  // no drive
                    const int64_t ev = cpu::neurons_step(v.data(), n.data(), spikes.data(), inc.data(), T, N, inv.data(), per_col, lo, hi);
                    int64_t events = 0;
                    for (int64_t k = 0; k < TN; ++k) {
                        const size_t i = size_t(k);
                        const double I = double(inc[i]) * double(inv[per_col ? size_t(k % N) : 0]);
                        int rs = 0;
                        if (!std::isnan(I)) rv[i] += I, sum[i] += I;
                        if (rv[i] >= 1.0 && rn[i] < hi) rv[i] -= 1.0, rn[i] += 1, rs = 1;
                        else if (rv[i] < 0.0 && rn[i] > lo) rv[i] += 1.0, rn[i] -= 1, rs = -1;
                        if (spikes[i] != rs || v[i] != rv[i] || n[i] != rn[i])
                            f.add("L {} [{}, {}] step {} k {}: kernel ({}, {}, {}) reference ({}, {}, {})", L, lo, hi, step, k,
                                  spikes[i], v[i], n[i], rs, rv[i], rn[i]);
                        if (std::fabs(v[i] + n[i] - 0.5 - sum[i]) > 1e-9) f.add("step {} k {}: charge not conserved", step, k);
                        const bool settled = (v[i] >= 0 && v[i] < 1) || (n[i] == hi && v[i] >= 1) || (n[i] == lo && v[i] < 0);
                        // away from ties (the double sums may round either way there)
                        const double frac = sum[i] + 0.5 - std::floor(sum[i] + 0.5);
                        if (settled && frac > 1e-9 && frac < 1 - 1e-9) {
                            ++tracked;
                            if (n[i] != clampi(int64_t(std::floor(sum[i] + 0.5)), lo, hi))
                                f.add("step {} k {}: settled count {} for sum {}", step, k, n[i], sum[i]);
                        }
                        if (step == drive + quiet - 1 && !settled) f.add("k {}: not settled after {} quiet steps", k, quiet);
                        events += rs != 0, minus += rs < 0;
                    }
                    if (ev != events) f.add("step {}: {} events, expected {}", step, ev, events);
                }
                CHECK_MESSAGE(f.n == 0, f.first);
                CHECK(minus > 0);
                CHECK(tracked > TN * quiet / 4);
            }
}

TEST_CASE("spiking: cpu::linear_counts and cpu::linear_spikes agree bit for bit with an int64 reference") {
    std::mt19937_64 rng(60);
    for (auto [T, K, N, S] : std::vector<std::array<int64_t, 4>>{{1, 1, 1, 1}, {4, 40, 23, 130}, {3, 64, 9, 127}, {6, 17, 50, 9}}) {
        const int cmax = int(std::min<int64_t>(S, 127));
        // counts: [T, K], spikes: [S, T, K] summing to them; w: [K, N] integers with |w| < 2^23.
        auto counts = random_counts(size_t(T * K), -cmax, cmax, rng);
        if (T * K > 4) counts[0] = int8_t(cmax), counts[1] = int8_t(-cmax), counts[2] = 0;
        std::vector<int8_t> spikes(size_t(S * T * K));
        for (int64_t i = 0; i < T * K; ++i) spike_train(spikes.data() + i, T * K, int(S), counts[size_t(i)], rng);
        std::vector<double> w(size_t(K * N));
        std::uniform_int_distribution<int32_t> wd(-(1 << 23) + 1, (1 << 23) - 1);
        for (auto& x : w) x = double(wd(rng));
        w[0] = (1 << 23) - 1;
        if (K * N > 1) w[1] = -(1 << 23) + 1;
        std::vector<float> mult(static_cast<size_t>(N)), b(static_cast<size_t>(N));
        std::uniform_real_distribution<float> md(-3.0f, 3.0f);
        for (int64_t j = 0; j < N; ++j) mult[size_t(j)] = std::ldexp(md(rng), -20), b[size_t(j)] = md(rng);
        for (const float* bias : {static_cast<const float*>(b.data()), static_cast<const float*>(nullptr)}) {
            std::vector<float> oc(size_t(T * N), NAN), os(size_t(T * N), NAN);
            std::vector<double> scratch(size_t(T * K + T * N), NAN), acc(size_t(T * N), NAN);
            cpu::linear_counts(oc.data(), counts.data(), T, K, w.data(), N, mult.data(), bias, scratch.data());
            const int64_t ops = cpu::linear_spikes(os.data(), spikes.data(), int(S), T, K, w.data(), N, mult.data(), bias, acc.data());
            int64_t nz = 0;
            for (int8_t s : spikes) nz += s != 0;
            CHECK(ops == nz * N);
            // Both paths share one rounding: bit for bit equal.
            CHECK(std::memcmp(oc.data(), os.data(), oc.size() * sizeof(float)) == 0);
            // The reference: acc exact in int64, float(acc) * mult rounded once, then + b. C++ lets
            // the compiler fuse that multiply-add (-march=native does, with FMA), so with a bias
            // either rounding is accepted; without one the result is exact to the bit.
            Failures f;
            for (int64_t t = 0; t < T; ++t)
                for (int64_t j = 0; j < N; ++j) {
                    int64_t a = 0;
                    for (int64_t k = 0; k < K; ++k) a += int64_t(counts[size_t(t * K + k)]) * int64_t(w[size_t(k * N + j)]);
                    const float fa = float(a);  // int64 -> float, rounded once
                    volatile float prod = fa * mult[size_t(j)];
                    const float two = bias ? float(prod) + bias[j] : float(prod);
                    const float fused = bias ? std::fma(fa, mult[size_t(j)], bias[j]) : float(prod);
                    const float got = oc[size_t(t * N + j)];
                    if (std::memcmp(&got, &two, 4) != 0 && std::memcmp(&got, &fused, 4) != 0)
                        f.add("T {} K {} N {} [{}, {}]: {} expected {} or {} (acc {})", T, K, N, t, j, got, two, fused, a);
                }
            CHECK_MESSAGE(f.n == 0, f.first);
        }
    }
}

TEST_CASE("spiking: integer attention products on counts equal their spike-train versions and a reference") {
    std::mt19937_64 rng(70);
    for (auto [T, P, H, D, S] : std::vector<std::array<int64_t, 5>>{
             {1, 0, 1, 1, 1}, {4, 0, 2, 8, 6}, {1, 5, 3, 4, 8}, {3, 4, 3, 5, 8}, {1, 11, 2, 16, 12}, {6, 7, 2, 3, 16}}) {
        // A chunk of T tokens after P cached ones; two spare cache rows past P + T hold garbage.
        const int64_t C = H * D, Lk = P + T, cap = P + T + 2;
        INFO(fmt::format("T {} P {} H {} D {} S {}", T, P, H, D, S));
        const int cm = int(std::min<int64_t>(S, 127));
        // qs, ks, vs: [S, T, C]; nq, nk, nv: [T, C] their sums
        auto nq = random_counts(size_t(T * C), -cm, cm, rng), nk = random_counts(size_t(T * C), -cm, cm, rng),
             nv = random_counts(size_t(T * C), -cm, cm, rng);
        std::vector<int8_t> qs(size_t(S * T * C)), ks(qs.size()), vs(qs.size());
        for (int64_t i = 0; i < T * C; ++i) {
            spike_train(qs.data() + i, T * C, int(S), nq[size_t(i)], rng);
            spike_train(ks.data() + i, T * C, int(S), nk[size_t(i)], rng);
            spike_train(vs.data() + i, T * C, int(S), nv[size_t(i)], rng);
        }
        // kc, vc: [H, cap, D]; random everywhere (rows >= P + T are garbage), then the chunk appended.
        auto kc = random_counts(size_t(H * cap * D), -127, 127, rng), vc = random_counts(kc.size(), -127, 127, rng);
        const auto kc0 = kc, vc0 = vc;
        cpu::kv_append_counts(kc.data(), vc.data(), nk.data(), nv.data(), T, P, H, D, cap);
        for (int64_t h = 0; h < H; ++h)
            for (int64_t j = 0; j < cap; ++j)
                for (int64_t d = 0; d < D; ++d) {
                    const size_t i = size_t((h * cap + j) * D + d);
                    const bool chunk = j >= P && j < P + T;
                    CHECK(kc[i] == (chunk ? nk[size_t((j - P) * C + h * D + d)] : kc0[i]));
                    CHECK(vc[i] == (chunk ? nv[size_t((j - P) * C + h * D + d)] : vc0[i]));
                }

        // scores: [H, T, Lk]
        std::vector<int32_t> sref(size_t(H * T * Lk)), sc(sref.size(), 0x55555555), ss(sref.size(), 0x55555555);
        for (int64_t h = 0; h < H; ++h)
            for (int64_t t = 0; t < T; ++t)
                for (int64_t j = 0; j < Lk; ++j) {
                    int32_t acc = 0;
                    if (j <= P + t)
                        for (int64_t d = 0; d < D; ++d)
                            acc += int32_t(nq[size_t(t * C + h * D + d)]) * int32_t(kc[size_t((h * cap + j) * D + d)]);
                    sref[size_t((h * T + t) * Lk + j)] = acc;
                }
        cpu::scores_counts(sc.data(), nq.data(), kc.data(), T, P, H, D, cap);
        std::vector<int32_t> run(size_t(2 * T * C), 0x55555555);
        const int64_t sops = cpu::scores_spikes(ss.data(), qs.data(), ks.data(), kc.data(), int(S), T, P, H, D, cap, run.data());
        CHECK(sc == sref);
        CHECK(ss == sref);
        if (S > 1) CHECK(sops > 0);

        // np: [H, T, Lk] probability counts (unsigned), with garbage past P + t that the causal
        // mask must ignore; ps: [S, H, T, Lk] spike trains summing to them.
        auto np = random_counts(size_t(H * T * Lk), 0, cm, rng);
        std::vector<int8_t> ps(size_t(S * H * T * Lk));
        for (int64_t i = 0; i < H * T * Lk; ++i) spike_train(ps.data() + i, H * T * Lk, int(S), np[size_t(i)], rng);
        // out: [T, C]
        std::vector<int32_t> oref(size_t(T * C), 0), oc(oref.size(), 0x55555555), os(oref.size(), 0x55555555);
        for (int64_t t = 0; t < T; ++t)
            for (int64_t h = 0; h < H; ++h)
                for (int64_t d = 0; d < D; ++d) {
                    int32_t acc = 0;
                    for (int64_t j = 0; j <= P + t; ++j)
                        acc += int32_t(np[size_t((h * T + t) * Lk + j)]) * int32_t(vc[size_t((h * cap + j) * D + d)]);
                    oref[size_t(t * C + h * D + d)] = acc;
                }
        cpu::pv_counts(oc.data(), np.data(), vc.data(), T, P, H, D, cap);
        std::vector<int32_t> prun(size_t(H * T * Lk + T * C), 0x55555555);
        const int64_t pops = cpu::pv_spikes(os.data(), ps.data(), vs.data(), vc.data(), int(S), T, P, H, D, cap, prun.data());
        CHECK(oc == oref);
        CHECK(os == oref);
        if (S > 1) CHECK(pops > 0);
    }
}

TEST_CASE("spiking: cpu::softmax_causal rows sum to 1 over j <= P + t and are 0 after") {
    std::mt19937_64 rng(80);
    std::normal_distribution<float> nd(0.0f, 4.0f);
    for (auto [H, T, P] : std::vector<std::array<int64_t, 3>>{{1, 1, 0}, {2, 5, 0}, {3, 1, 9}, {2, 4, 6}}) {
        const int64_t Lk = P + T;
        // x: [H, T, Lk]; masked entries hold NaN, which the kernel must neither read nor keep.
        std::vector<float> x(size_t(H * T * Lk));
        for (int64_t h = 0; h < H; ++h)
            for (int64_t t = 0; t < T; ++t)
                for (int64_t j = 0; j < Lk; ++j)
                    x[size_t((h * T + t) * Lk + j)] = j <= P + t ? nd(rng) + (j == 0 ? 80.0f : 0.0f) : NAN;
        const auto x0 = x;
        cpu::softmax_causal(x.data(), H, T, P);
        for (int64_t h = 0; h < H; ++h)
            for (int64_t t = 0; t < T; ++t) {
                const float* r = x.data() + (h * T + t) * Lk;
                const float* r0 = x0.data() + (h * T + t) * Lk;
                double m = -INFINITY, z = 0, sum = 0;
                for (int64_t j = 0; j <= P + t; ++j) m = std::max(m, double(r0[j]));
                for (int64_t j = 0; j <= P + t; ++j) z += std::exp(double(r0[j]) - m);
                double maxerr = 0;
                for (int64_t j = 0; j <= P + t; ++j) {
                    sum += r[j];
                    maxerr = std::max(maxerr, std::fabs(double(r[j]) - std::exp(double(r0[j]) - m) / z));
                    CHECK(r[j] >= 0.0f);
                }
                CHECK(sum == doctest::Approx(1.0).epsilon(1e-5));
                CHECK(maxerr < 1e-6);
                for (int64_t j = P + t + 1; j < Lk; ++j) CHECK(r[j] == 0.0f);
            }
    }
}

// ---------------------------------------------------------------- 6. exact linear weights

TEST_CASE("spiking: ExactLinear::build makes integer weights below 2^23 that reproduce W * s") {
    std::mt19937_64 rng(90);
    const int64_t K = 48, N = 31;
    // W: [K, N], columns spread over 12 orders of magnitude; column 3 zero, column 4 one nonzero.
    Tensor W = Tensor::empty({K, N}, DType::F32);
    float* wp = W.data<float>();
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> ex(-6.0f, 6.0f);
    std::vector<float> colscale(static_cast<size_t>(N));
    for (auto& c : colscale) c = std::pow(10.0f, ex(rng));
    for (int64_t i = 0; i < K; ++i)
        for (int64_t j = 0; j < N; ++j) wp[i * N + j] = j == 3 ? 0.0f : (j == 4 ? (i == 7 ? -2.5f : 0.0f) : nd(rng) * colscale[size_t(j)]);
    Tensor bias = Tensor::empty({N}, DType::F32);
    for (int64_t j = 0; j < N; ++j) bias.data<float>()[j] = nd(rng);
    for (bool per_channel : {false, true})
        for (bool with_bias : {false, true}) {
            SiteQuant in;
            std::uniform_real_distribution<float> sd(0.001f, 3.0f);
            in.scale.resize(per_channel ? size_t(K) : 1);
            for (auto& s : in.scale) s = sd(rng);
            auto s_of = [&](int64_t i) { return double(in.scale[per_channel ? size_t(i) : 0]); };
            const ExactLinear e = ExactLinear::build(W, with_bias ? bias : Tensor(), in);
            REQUIRE(e.w.dtype() == DType::F64);
            REQUIRE(e.w.shape() == Shape{K, N});
            REQUIRE(e.mult.shape() == Shape{N});
            CHECK(e.bias.defined() == with_bias);
            const double* w = e.w.data<double>();
            const float* mult = e.mult.data<float>();
            Failures f;
            for (int64_t j = 0; j < N; ++j) {
                double colmax = 0, wmax = 0;
                for (int64_t i = 0; i < K; ++i) colmax = std::max(colmax, std::fabs(double(wp[i * N + j]) * s_of(i)));
                int ex2 = 0;
                if (!(std::isfinite(mult[j]) && mult[j] > 0 && std::frexp(mult[j], &ex2) == 0.5)) f.add("column {}: mult {} is not a power of 2", j, mult[j]);
                for (int64_t i = 0; i < K; ++i) {
                    const double wij = w[i * N + j];
                    wmax = std::max(wmax, std::fabs(wij));
                    if (wij != std::nearbyint(wij) || std::fabs(wij) >= 0x1p23) f.add("w[{}][{}] = {}", i, j, wij);
                    const double err = std::fabs(wij * double(mult[j]) - double(wp[i * N + j]) * s_of(i));
                    if (err > std::ldexp(colmax, -22)) f.add("w[{}][{}]: error {} for column max {}", i, j, err, colmax);
                }
                // the column's precision is used: its largest weight has 23 bits (none if the column is zero)
                if (colmax > 0 ? wmax < 0x1p22 : wmax != 0) f.add("column {}: largest |w| {}", j, wmax);
            }
            CHECK_MESSAGE(f.n == 0, f.first);
        }
    SiteQuant bad;
    bad.scale.assign(size_t(K - 1), 1.0f);
    CHECK_THROWS_AS(ExactLinear::build(W, Tensor(), bad), Error);
}

// ---------------------------------------------------------------- 7. Tensor-level checks

TEST_CASE("spiking: the Tensor-level kernels agree with cpu:: and refuse bad operands naming the op") {
    using doctest::Contains;
    const int64_t T = 3, N = 5, K = 4, S = 4;
    auto f32 = [](Shape s) { return Tensor::zeros(s, DType::F32); };
    auto i8 = [](Shape s) { return Tensor::zeros(s, DType::I8); };
    auto i32 = [](Shape s) { return Tensor::zeros(s, DType::I32); };
    auto f64 = [](Shape s) { return Tensor::zeros(s, DType::F64); };
    Tensor x = f32({T, N}), inv1 = f32({1}), invN = f32({N});
    for (int64_t i = 0; i < T * N; ++i) x.data<float>()[i] = float(i % 7) - 2.6f;
    inv1.data<float>()[0] = 1.0f;
    for (int64_t i = 0; i < N; ++i) invN.data<float>()[i] = 0.5f + float(i);

    SUBCASE("results") {
        for (const Tensor* inv : {&inv1, &invN}) {
            const bool pc = inv->numel() == N;
            Tensor counts = i8({T, N}), spikes = i8({S, T, N}), counts2 = i8({T, N});
            kernels::quantize(counts, x, {*inv, -4, 4});
            std::vector<int8_t> want(size_t(T * N)), sp(size_t(S * T * N));
            cpu::quantize(want.data(), x.data<float>(), T, N, inv->data<float>(), pc, -4, 4);
            CHECK(std::memcmp(counts.data<int8_t>(), want.data(), want.size()) == 0);
            const int64_t ev = kernels::neurons_layerwise(counts2, spikes, x, {*inv, -4, 4}, int(S));
            CHECK(ev == cpu::neurons_layerwise(want.data(), sp.data(), x.data<float>(), T, N, inv->data<float>(), pc, -4, 4, int(S)));
            CHECK(std::memcmp(counts2.data<int8_t>(), want.data(), want.size()) == 0);
            CHECK(std::memcmp(spikes.data<int8_t>(), sp.data(), sp.size()) == 0);
        }
    }
    SUBCASE("neurons and quantizer") {
        Tensor counts = i8({T, N});
        CHECK_THROWS_WITH_AS(kernels::quantize(counts, x, {inv1, 0, 200}), Contains("quantize: bounds"), Error);
        CHECK_THROWS_WITH_AS(kernels::quantize(counts, x, {inv1, -200, 5}), Contains("quantize"), Error);
        CHECK_THROWS_WITH_AS(kernels::quantize(counts, x, {inv1, 1, 5}), Contains("quantize"), Error);
        CHECK_THROWS_WITH_AS(kernels::quantize(counts, x, {f32({N + 1}), 0, 5}), Contains("quantize: inverse thresholds"), Error);
        CHECK_THROWS_WITH_AS(kernels::quantize(counts, x, {i32({1}), 0, 5}), Contains("quantize"), Error);
        CHECK_THROWS_WITH_AS(kernels::quantize(counts, i32({T, N}), {inv1, 0, 5}), Contains("quantize"), Error);
        CHECK_THROWS_WITH_AS(kernels::quantize(i8({T, N + 1}), x, {inv1, 0, 5}), Contains("quantize"), Error);
        CHECK_THROWS_WITH_AS(kernels::quantize(i32({T, N}), x, {inv1, 0, 5}), Contains("quantize"), Error);
        CHECK_THROWS_WITH_AS(kernels::quantize(counts, f32({T, N, 1}), {inv1, 0, 5}), Contains("quantize"), Error);
        CHECK_THROWS_WITH_AS(kernels::neurons_layerwise(counts, Tensor(), x, {inv1, 0, 5}, 0), Contains("neurons"), Error);
        CHECK_THROWS_WITH_AS(kernels::neurons_layerwise(counts, i8({S + 1, T, N}), x, {inv1, 0, 5}, int(S)), Contains("neurons: spikes"), Error);
        CHECK_THROWS_WITH_AS(kernels::neurons_layerwise(counts, i8({S, T, N}), x, {inv1, 0, 128}, int(S)), Contains("neurons: bounds"), Error);
        CHECK_THROWS_WITH_AS(kernels::neurons_layerwise(counts, Tensor(), x, {invN.reshape({1, N}), 0, 5}, int(S)), Contains("neurons"), Error);
        CHECK_NOTHROW(kernels::neurons_layerwise(counts, Tensor(), x, {inv1, 0, 127}, int(S)));
        Tensor v = f64({T, N}), n = i32({T, N}), sp = i8({T, N});
        CHECK_NOTHROW(kernels::neurons_step(v, n, sp, x, {invN, -3, 3}));
        CHECK_THROWS_WITH_AS(kernels::neurons_step(i32({T, N}), n, sp, x, {inv1, 0, 5}), Contains("neurons_step: membranes"), Error);
        CHECK_THROWS_WITH_AS(kernels::neurons_step(v, i32({T, N + 1}), sp, x, {inv1, 0, 5}), Contains("neurons_step"), Error);
        CHECK_THROWS_WITH_AS(kernels::neurons_step(v, n, sp, x, {inv1, 0, 200}), Contains("neurons_step: bounds"), Error);
    }
    SUBCASE("linear layers") {
        Tensor out = f32({T, N}), counts = i8({T, K}), w = f64({K, N}), mult = f32({N}), b = f32({N});
        Tensor spikes = i8({S, T, K});
        CHECK_NOTHROW(kernels::linear_counts(out, counts, w, mult, b, f64({T * K + T * N})));
        CHECK_NOTHROW(kernels::linear_spikes(out, spikes, w, mult, Tensor(), f64({T * N})));
        CHECK_THROWS_WITH_AS(kernels::linear_counts(out, counts, w, mult, b, f64({T * K + T * N - 1})), Contains("linear_counts: scratch"), Error);
        CHECK_THROWS_WITH_AS(kernels::linear_counts(out, counts, w, mult, b, f32({T * K + T * N})), Contains("linear_counts"), Error);
        CHECK_THROWS_WITH_AS(kernels::linear_counts(out, counts, f32({K, N}), mult, b, f64({100})), Contains("linear_counts: w"), Error);
        CHECK_THROWS_WITH_AS(kernels::linear_counts(out, counts, f64({K + 1, N}), mult, b, f64({100})), Contains("linear_counts"), Error);
        CHECK_THROWS_WITH_AS(kernels::linear_counts(out, counts, w, f32({N + 1}), b, f64({100})), Contains("linear_counts: mult"), Error);
        CHECK_THROWS_WITH_AS(kernels::linear_counts(out, counts, w, mult, f32({N - 1}), f64({100})), Contains("linear_counts: bias"), Error);
        CHECK_THROWS_WITH_AS(kernels::linear_counts(f32({T + 1, N}), counts, w, mult, b, f64({100})), Contains("linear_counts: out"), Error);
        CHECK_THROWS_WITH_AS(kernels::linear_counts(out, i32({T, K}), w, mult, b, f64({100})), Contains("linear_counts"), Error);
        CHECK_THROWS_WITH_AS(kernels::linear_spikes(out, spikes, w, mult, b, f64({T * N - 1})), Contains("linear_spikes: accumulator"), Error);
        CHECK_THROWS_WITH_AS(kernels::linear_spikes(out, i8({T, K}), w, mult, b, f64({T * N})), Contains("linear_spikes"), Error);
    }
    SUBCASE("attention") {
        const int64_t H = 2, D = 3, C = H * D, cap = 6, P = 2, Tq = 3, Lk = P + Tq;
        Tensor kc = i8({H, cap, D}), vc = i8({H, cap, D}), nq = i8({Tq, C}), scores = i32({H, Tq, Lk});
        CHECK_NOTHROW(kernels::scores_counts(scores, nq, kc, P));
        CHECK_THROWS_WITH_AS(kernels::scores_counts(scores, nq, kc, 4), Contains("scores_counts"), Error);  // 4 + 3 > cap
        CHECK_THROWS_WITH_AS(kernels::scores_counts(i32({H, Tq, Lk + 1}), nq, kc, P), Contains("scores_counts: scores"), Error);
        CHECK_THROWS_WITH_AS(kernels::scores_counts(scores, i8({Tq, C + 1}), kc, P), Contains("scores_counts"), Error);
        CHECK_THROWS_WITH_AS(kernels::scores_counts(scores, nq, f32({H, cap, D}), P), Contains("scores_counts"), Error);
        Tensor np = i8({H, Tq, Lk}), out = i32({Tq, C});
        CHECK_NOTHROW(kernels::pv_counts(out, np, vc, P));
        CHECK_THROWS_WITH_AS(kernels::pv_counts(out, i8({Tq, Lk}), vc, P), Contains("pv_counts"), Error);
        CHECK_THROWS_WITH_AS(kernels::pv_counts(f32({Tq, C}), np, vc, P), Contains("pv_counts"), Error);
        Tensor qs = i8({S, Tq, C}), ks = i8({S, Tq, C});
        CHECK_NOTHROW(kernels::scores_spikes(scores, qs, ks, kc, P, i32({2 * Tq * C})));
        CHECK_THROWS_WITH_AS(kernels::scores_spikes(scores, qs, ks, kc, P, i32({2 * Tq * C - 1})), Contains("scores_spikes: running sums"), Error);
        CHECK_THROWS_WITH_AS(kernels::scores_spikes(scores, qs, i8({S + 1, Tq, C}), kc, P, i32({100})), Contains("scores_spikes"), Error);
        Tensor ps = i8({S, H, Tq, Lk});
        CHECK_NOTHROW(kernels::pv_spikes(out, ps, qs, vc, P, i32({H * Tq * Lk + Tq * C})));
        CHECK_THROWS_WITH_AS(kernels::pv_spikes(out, ps, qs, vc, P, i32({H * Tq * Lk + Tq * C - 1})), Contains("pv_spikes: running sums"), Error);
        CHECK_THROWS_WITH_AS(kernels::pv_spikes(out, i8({S, H, Tq, Lk - 1}), qs, vc, P, i32({100})), Contains("pv_spikes"), Error);
        CHECK_NOTHROW(kernels::kv_append_counts(kc, vc, nq, nq, cap - Tq));
        CHECK_THROWS_WITH_AS(kernels::kv_append_counts(kc, vc, nq, nq, cap - Tq + 1), Contains("kv_append_counts"), Error);
        CHECK_THROWS_WITH_AS(kernels::kv_append_counts(kc, i8({H, cap + 1, D}), nq, nq, 0), Contains("kv_append_counts"), Error);
        Tensor probs = f32({H, Tq, Lk});
        CHECK_NOTHROW(kernels::softmax_causal(probs, P));
        CHECK_THROWS_WITH_AS(kernels::softmax_causal(probs, P + 1), Contains("softmax_causal"), Error);
        CHECK_THROWS_WITH_AS(kernels::softmax_causal(i32({H, Tq, Lk}), P), Contains("softmax_causal"), Error);
    }
}

// ---------------------------------------------------------------------------------------------
// Temporal-difference operators (DESIGN §5), built from the kernels the streaming schedule uses:
// a running input X_t (accumulate), f(X_t), and the emitted difference (td_emit). What has been
// emitted after any step must sum to f(X_t).
TEST_CASE("spiking: temporal-difference operators (GPT-2 and Llama) emit f(X_t) in sum after every step") {
    std::mt19937_64 rng(77);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int64_t T = 3, C = 16, H = 2, P = 2, L = P + T;
    auto rand_tensor = [&](const Shape& s, float scale) {
        Tensor t = Tensor::empty(s, DType::F32);
        for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = scale * nd(rng);
        return t;
    };
    const Tensor g = rand_tensor({C}, 0.5f), b = rand_tensor({C}, 0.5f);
    for (int64_t i = 0; i < C; ++i) g.data<float>()[i] += 1.0f;

    struct Op {
        const char* name;
        Shape shape;
        std::function<void(const Tensor& y, const Tensor& x)> f;
    };
    const std::vector<Op> ops = {
        {"layernorm", {T, C}, [&](const Tensor& y, const Tensor& x) { kernels::layernorm(y, x, g, b, 1e-5f); }},
        {"gelu", {T, C}, [&](const Tensor& y, const Tensor& x) { kernels::scaled_copy(y, x, 1.0f), kernels::activation(y, Activation::GeluTanh); }},
        {"softmax", {H, T, L}, [&](const Tensor& y, const Tensor& x) { kernels::scaled_copy(y, x, 1.0f), kernels::softmax_causal(y, P); }},
        // Llama's: RMSNorm, and the SiLU-gate product of the running sums of g and u (x = g | u:
        // [T, 2C]; the product fills the first C columns of y, the rest stays 0).
        {"rmsnorm", {T, C}, [&](const Tensor& y, const Tensor& x) { kernels::rmsnorm(y, x, g, 1e-5f); }},
        {"silu_gate", {T, 2 * C}, [&](const Tensor& y, const Tensor& x) {
             const Tensor o = Tensor::empty({T, C}, DType::F32);
             kernels::silu_gate(o, x);
             for (int64_t t = 0; t < T; ++t)
                 for (int64_t c = 0; c < 2 * C; ++c) y.data<float>()[t * 2 * C + c] = c < C ? o.data<float>()[t * C + c] : 0.0f;
         }},
    };
    for (const Op& op : ops) {
        CAPTURE(op.name);
        for (int S : {1, 4, 64}) {
            Tensor sum = Tensor::zeros(op.shape, DType::F64), x = Tensor::empty(op.shape, DType::F32),
                   y = Tensor::empty(op.shape, DType::F32), prev = Tensor::zeros(op.shape, DType::F32),
                   emitted = Tensor::empty(op.shape, DType::F32), total = Tensor::zeros(op.shape, DType::F64),
                   ref = Tensor::empty(op.shape, DType::F32);
            float worst = 0;
            for (int t = 0; t < S; ++t) {
                const Tensor inc = rand_tensor(op.shape, 2.0f / float(S));  // mixed-sign increments
                kernels::accumulate(sum, inc, x);  // X_t
                op.f(y, x);
                kernels::td_emit(emitted, y, prev);
                for (int64_t i = 0; i < emitted.numel(); ++i) total.data<double>()[i] += emitted.data<float>()[i];
                // f applied directly to the running sum, in double precision's f32 rounding
                Tensor xr = Tensor::empty(op.shape, DType::F32);
                for (int64_t i = 0; i < xr.numel(); ++i) xr.data<float>()[i] = float(sum.data<double>()[i]);
                op.f(ref, xr);
                for (int64_t i = 0; i < ref.numel(); ++i)
                    worst = std::max(worst, float(std::fabs(total.data<double>()[i] - double(ref.data<float>()[i]))));
                CHECK(worst <= 1e-5f * float(t + 1));
                if (std::string(op.name) == "softmax")  // what it emitted so far is a distribution
                    for (int64_t r = 0; r < H * T; ++r) {
                        double row = 0;
                        for (int64_t j = 0; j <= P + r % T; ++j) row += total.data<double>()[r * L + j];
                        CHECK(row == doctest::Approx(1.0).epsilon(1e-5));
                    }
            }
        }
    }
}

TEST_CASE("spiking: ConstantCurrent (the fused neuron kernels' stepping) yields constant_current at every step") {
    int64_t cases = 0;
    for (int S : {1, 2, 3, 7, 16, 33, 128})
        for (int32_t U : {0, 1, -1, 5, -5, 65535, -65536, 65536 * 3 + 17, -(65536 * 7) - 3, 127 * 65536, -127 * 65536}) {
            spk::ConstantCurrent c(U, S);
            for (int t = 0; t < S; ++t) {
                const int32_t got = c.next(), want = spk::constant_current(U, t, S);
                if (got != want) FAIL_CHECK("U " << U << " S " << S << " t " << t << ": " << got << " != " << want);
            }
            ++cases;
        }
    CHECK(cases == 77);
}

TEST_CASE("spiking: grouped-query attention on counts and spikes equals MHA with repeated key/value heads") {
    // H query heads share G key/value heads (query head h reads h / (H / G)); the result must equal
    // the plain (G = H) kernels on caches and k/v trains whose heads are repeated H / G times.
    std::mt19937_64 rng(91);
    for (auto [T, P, H, G, D, S] : std::vector<std::array<int64_t, 6>>{
             {1, 0, 2, 1, 3, 4}, {3, 2, 6, 2, 4, 8}, {4, 5, 4, 4, 2, 6}, {2, 7, 8, 2, 3, 12}}) {
        INFO(fmt::format("T {} P {} H {} G {} D {} S {}", T, P, H, G, D, S));
        const int64_t Cq = H * D, Ck = G * D, group = H / G, Lk = P + T, cap = P + T + 1;
        const int cm = int(std::min<int64_t>(S, 127));
        auto nq = random_counts(size_t(T * Cq), -cm, cm, rng), nk = random_counts(size_t(T * Ck), -cm, cm, rng),
             nv = random_counts(size_t(T * Ck), -cm, cm, rng);
        std::vector<int8_t> qs(size_t(S * T * Cq)), ks(size_t(S * T * Ck)), vs(ks.size());
        for (int64_t i = 0; i < T * Cq; ++i) spike_train(qs.data() + i, T * Cq, int(S), nq[size_t(i)], rng);
        for (int64_t i = 0; i < T * Ck; ++i) {
            spike_train(ks.data() + i, T * Ck, int(S), nk[size_t(i)], rng);
            spike_train(vs.data() + i, T * Ck, int(S), nv[size_t(i)], rng);
        }
        // kc, vc: [G, cap, D] with the chunk appended at rows P..; the expanded copies [H, cap, D].
        Tensor kc = Tensor::empty({G, cap, D}, DType::I8), vc = Tensor::empty({G, cap, D}, DType::I8);
        const auto k0 = random_counts(size_t(G * cap * D), -127, 127, rng), v0 = random_counts(k0.size(), -127, 127, rng);
        std::copy(k0.begin(), k0.end(), kc.data<int8_t>()), std::copy(v0.begin(), v0.end(), vc.data<int8_t>());
        auto tensor8 = [](const std::vector<int8_t>& v, Shape s) {
            Tensor t = Tensor::empty(s, DType::I8);
            std::copy(v.begin(), v.end(), t.data<int8_t>());
            return t;
        };
        const Tensor tq = tensor8(nq, {T, Cq}), tk = tensor8(nk, {T, Ck}), tv = tensor8(nv, {T, Ck});
        kernels::kv_append_counts(kc, vc, tk, tv, P);
        // Expanded: head h of the MHA copy is key/value head h / group.
        auto expand_cache = [&](const Tensor& c) {
            Tensor e = Tensor::empty({H, cap, D}, DType::I8);
            for (int64_t h = 0; h < H; ++h)
                std::memcpy(e.data<int8_t>() + h * cap * D, c.data<int8_t>() + (h / group) * cap * D, size_t(cap * D));
            return e;
        };
        auto expand_rows = [&](const std::vector<int8_t>& x, int64_t rows) {  // [rows, G D] -> [rows, H D]
            std::vector<int8_t> e(size_t(rows * Cq));
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t h = 0; h < H; ++h)
                    std::memcpy(e.data() + r * Cq + h * D, x.data() + r * Ck + (h / group) * D, size_t(D));
            return e;
        };
        const Tensor kce = expand_cache(kc), vce = expand_cache(vc);
        const Tensor kse = tensor8(expand_rows(ks, S * T), {S, T, Cq}), vse = tensor8(expand_rows(vs, S * T), {S, T, Cq});
        const Tensor tqs = tensor8(qs, {S, T, Cq}), tks = tensor8(ks, {S, T, Ck}), tvs = tensor8(vs, {S, T, Ck});

        Tensor sg = Tensor::empty({H, T, Lk}, DType::I32), se = Tensor::empty({H, T, Lk}, DType::I32),
               sgs = Tensor::empty({H, T, Lk}, DType::I32), run = Tensor::empty({H * T * Lk + 2 * T * Cq}, DType::I32);
        kernels::scores_counts(sg, tq, kc, P);
        kernels::scores_counts(se, tq, kce, P);
        kernels::scores_spikes(sgs, tqs, tks, kc, P, run);
        CHECK(std::memcmp(sg.raw(), se.raw(), size_t(sg.nbytes())) == 0);
        CHECK(std::memcmp(sgs.raw(), se.raw(), size_t(sg.nbytes())) == 0);
        // A k train with H heads against a G-head cache is refused by name.
        if (G < H) CHECK_THROWS_WITH_AS(kernels::scores_spikes(sgs, tqs, kse, kc, P, run), doctest::Contains("k spikes"), Error);
        if (G < H) CHECK_THROWS_AS(kernels::scores_counts(sg, tensor8(nk, {T, Ck}), kc, P), Error);  // queries too narrow

        const auto np = random_counts(size_t(H * T * Lk), 0, cm, rng);
        std::vector<int8_t> ps(size_t(S * H * T * Lk));
        for (int64_t i = 0; i < H * T * Lk; ++i) spike_train(ps.data() + i, H * T * Lk, int(S), np[size_t(i)], rng);
        const Tensor tnp = tensor8(np, {H, T, Lk}), tps = tensor8(ps, {S, H, T, Lk});
        Tensor og = Tensor::empty({T, Cq}, DType::I32), oe = Tensor::empty({T, Cq}, DType::I32), ogs = Tensor::empty({T, Cq}, DType::I32),
               oes = Tensor::empty({T, Cq}, DType::I32);
        kernels::pv_counts(og, tnp, vc, P);
        kernels::pv_counts(oe, tnp, vce, P);
        kernels::pv_spikes(ogs, tps, tvs, vc, P, run);
        kernels::pv_spikes(oes, tps, vse, vce, P, run);
        CHECK(std::memcmp(og.raw(), oe.raw(), size_t(og.nbytes())) == 0);
        CHECK(std::memcmp(ogs.raw(), oe.raw(), size_t(og.nbytes())) == 0);
        CHECK(std::memcmp(oes.raw(), oe.raw(), size_t(og.nbytes())) == 0);
    }
    // Heads that do not share evenly are refused.
    Tensor kc = Tensor::zeros({4, 4, 2}, DType::I8);
    CHECK_THROWS_WITH_AS(kernels::scores_counts(Tensor::empty({6, 1, 1}, DType::I32), Tensor::zeros({1, 12}, DType::I8), kc, 0),
                         doctest::Contains("do not share"), Error);
}

TEST_CASE("spiking: token scaling puts each row's largest value on the top count and clips nothing") {
    // Rows of x with per-column inverse thresholds inv (clip_k = L / inv_k): ordinary rows, a row
    // with an outlier 50 clips high, a row of zeros, a row with a NaN-free tiny maximum, and
    // negative-only rows; signed and unsigned sites.
    const int64_t T = 6, N = 7;
    const int L = 15;
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> inv(N), x(size_t(T * N));
    for (int64_t i = 0; i < N; ++i) inv[size_t(i)] = float(L) / (0.5f + float(i));  // clip_i = 0.5 + i
    for (float& v : x) v = u(rng);
    x[size_t(1 * N + 3)] = 50.0f * 3.5f;                                         // 50x the clip of column 3
    for (int64_t i = 0; i < N; ++i) x[size_t(2 * N + i)] = 0.0f;                  // nothing to count
    for (int64_t i = 0; i < N; ++i) x[size_t(3 * N + i)] = 1e-6f * float(i + 1);  // tiny values
    for (int64_t i = 0; i < N; ++i) x[size_t(4 * N + i)] = -std::fabs(x[size_t(4 * N + i)]) - 0.01f;
    for (const bool is_signed : {true, false}) {
        CAPTURE(is_signed);
        const int n_min = is_signed ? -L : 0;
        std::vector<float> r(T), xs(size_t(T * N));
        cpu::token_scale(r.data(), xs.data(), x.data(), T, N, inv.data(), true, n_min, L);
        std::vector<int8_t> n(size_t(T * N));
        cpu::quantize(n.data(), xs.data(), T, N, inv.data(), true, n_min, L);
        for (int64_t t = 0; t < T; ++t) {
            CAPTURE(t);
            // The factor is the row's largest |x| (unsigned: max(x, 0)) in thresholds, over L.
            float m = 0.0f;
            for (int64_t i = 0; i < N; ++i) {
                const float v = x[size_t(t * N + i)];
                m = std::max(m, (is_signed ? std::fabs(v) : std::max(v, 0.0f)) * inv[size_t(i)]);
            }
            CHECK(r[size_t(t)] == (m > 0.0f ? m / float(L) : 1.0f));
            int top = 0;
            for (int64_t i = 0; i < N; ++i) {
                const float v = x[size_t(t * N + i)], s = r[size_t(t)] / inv[size_t(i)];  // the token's threshold
                CHECK(xs[size_t(t * N + i)] == v / r[size_t(t)]);
                const int c = n[size_t(t * N + i)];
                top = std::max(top, std::abs(c));
                // Nothing clips: the count times the token's threshold is within half a threshold of x
                // (of max(x, 0) for an unsigned site).
                const float want = is_signed ? v : std::max(v, 0.0f);
                CHECK(std::fabs(float(c) * s - want) <= 0.5f * s * (1.0f + 1e-4f));
            }
            CHECK(top == (m > 0.0f ? L : 0));  // the row's largest value lands on the top count
        }
        // The outlier row keeps its outlier: 50 clips in thresholds of its own column.
        CHECK(n[size_t(1 * N + 3)] == L);
        CHECK(r[1] == doctest::Approx(50.0f * 3.5f * inv[3] / float(L)));
    }
    // Undoing the factor: rows times r plus the bias; attention rows per (head, token).
    std::vector<float> out = {1, 2, 3, 4, 5, 6}, rr = {2.0f, -0.5f}, b = {10, 20, 30};
    cpu::rescale_rows(out.data(), rr.data(), b.data(), 2, 3);
    CHECK(out == std::vector<float>{12, 24, 36, 8, 17.5f, 27});
    cpu::rescale_rows(out.data(), rr.data(), nullptr, 2, 3);
    CHECK(out == std::vector<float>{24, 48, 72, -4, -8.75f, -13.5f});
    // [T = 2, H = 3, D = 2] scaled by r[h, t].
    std::vector<float> att(12, 1.0f), rh = {1, 2, 3, 4, 5, 6};  // r[h][t] = rh[h * 2 + t]
    cpu::rescale_head_rows(att.data(), rh.data(), 2, 3, 2);
    CHECK(att == std::vector<float>{1, 1, 3, 3, 5, 5, 2, 2, 4, 4, 6, 6});
}

TEST_CASE("spiking: the token-scaling Tensor kernels match cpu:: and refuse bad operands") {
    const int64_t T = 3, N = 5;
    Tensor x = Tensor::empty({T, N}, DType::F32), inv = Tensor::empty({1}, DType::F32);
    for (int64_t i = 0; i < T * N; ++i) x.data<float>()[i] = float(i % 7) - 3.0f;
    inv.data<float>()[0] = 2.0f;
    Tensor r = Tensor::empty({T}, DType::F32), xs = Tensor::empty({T, N}, DType::F32);
    kernels::token_scale(r, xs, x, {inv, -8, 8});
    std::vector<float> r2(T), xs2(size_t(T * N));
    cpu::token_scale(r2.data(), xs2.data(), x.data<float>(), T, N, inv.data<float>(), false, -8, 8);
    for (int64_t t = 0; t < T; ++t) CHECK(r.data<float>()[t] == r2[size_t(t)]);
    for (int64_t i = 0; i < T * N; ++i) CHECK(xs.data<float>()[i] == xs2[size_t(i)]);
    auto err = [](const std::function<void()>& f) {
        try {
            f();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    CHECK(err([&] { kernels::token_scale(Tensor::empty({T + 1}, DType::F32), xs, x, {inv, -8, 8}); }).find("token_scale") == 0);
    CHECK(err([&] { kernels::token_scale(r, xs, x, {inv, 0, 0}); }).find("n_max") != std::string::npos);
    CHECK(err([&] { kernels::rescale_rows(xs, r, Tensor::empty({N + 1}, DType::F32)); }).find("rescale_rows") == 0);
    CHECK(err([&] { kernels::rescale_head_rows(Tensor::empty({T, 7}, DType::F32), Tensor::empty({2, T}, DType::F32)); })
              .find("rescale_head_rows") == 0);
    Tensor att = Tensor::empty({T, 4}, DType::F32), rh = Tensor::empty({2, T}, DType::F32);
    for (int64_t i = 0; i < att.numel(); ++i) att.data<float>()[i] = 1.0f;
    for (int64_t i = 0; i < rh.numel(); ++i) rh.data<float>()[i] = float(i + 1);
    kernels::rescale_head_rows(att, rh);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < 4; ++c) CHECK(att.data<float>()[t * 4 + c] == float((c / 2) * T + t + 1));
}
