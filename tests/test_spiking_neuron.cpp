// spiking: the fixed-point integrate-and-fire neuron and the site quantizer, against the references
// of kernels/cpu/reference.h (stac::ref) and mathematical invariants (DESIGN §5).
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
#include "kernels/cpu/reference.h"
#include "spiking_helpers.h"


using namespace stac;
namespace spk = stac::spiking;
using namespace spiking_test;

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
                const int64_t want = ref::quantize_count(u, lo, hi);
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
                    const int64_t want = clampi(ref::floor_div(U + kOne / 2, kOne), lo, hi);
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
            const int64_t fl = ref::floor_div(U, S), cl = fl + (int64_t(U) % S != 0);
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
                    const int64_t want = near_tie(u) ? clampi(spk::quant_count_fixed(U, lo, hi), slo, shi) : ref::quantize_count(u, slo, shi);
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
        ref::IfNeuron ref(lo, hi);
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
    // The slow-enough condition: a settled neuron (ref::IfNeuron::settled) receiving |I_t| <= kOne
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
            const int64_t want = clampi(ref::floor_div(sum + kOne / 2, kOne), lo, hi);
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
        ref::IfNeuron ref(lo, hi);
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
        CHECK(n == clampi(ref::floor_div(sum + kOne / 2, kOne), lo, hi));
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
            const int64_t target = clampi(ref::floor_div(sum + kOne / 2, kOne), l, hi);
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
