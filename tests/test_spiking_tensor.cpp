// spiking: the Tensor-level spiking kernels (dispatch and operand checks), temporal-difference
// operators, grouped-query attention on counts and spikes, and token scaling (DESIGN §5).
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
