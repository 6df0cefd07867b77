// spiking: the CPU spiking kernels (quantizer, neurons, integer linear and attention products, causal
// softmax) and the exact integer weights, against plain reference loops (DESIGN §5).
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
                    const int64_t want = near_tie(u) ? spk::quant_count(u, lo, hi) : ref::quantize_count(u, lo, hi);
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
                        ref::IfNeuron ref(lo, hi);
                        int64_t sum = 0;
                        for (int s = 0; s < S; ++s) {
                            const int rs = ref.step(ref::constant_current(U, s, S));
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
    // settled (see ref::IfNeuron::settled); quiet steps at the end settle every neuron.
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
