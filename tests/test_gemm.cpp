// The matrix products of kernels/cpu/gemm.h (GEMV and GEMM paths, f32 and bf16 weights, AVX-512 BF16
// and portable kernels, 1 and 2 threads) against the plain reference loops.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "core/dtype.h"
#include "core/parallel.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/reference.h"
#include "kernels/kernels.h"
#include "models/gpt2.h"
#include "tests/helpers.h"

using namespace stac;
using stac::test::max_abs_diff;
using stac::test::random_floats;

namespace {

// Restores the thread count a test changed.
struct ThreadsGuard {
    int saved = num_threads();
    ~ThreadsGuard() { set_num_threads(saved); }
};

std::vector<float> rounded_to_bf16(const std::vector<float>& w) {
    std::vector<float> r(w.size());
    for (size_t i = 0; i < w.size(); ++i) r[i] = bf16_to_f32(f32_to_bf16(w[i]));
    return r;
}

const std::vector<std::array<int64_t, 3>> kShapes = {
    {1, 1, 1}, {1, 7, 5}, {1, 64, 192}, {2, 33, 100}, {3, 768, 130}, {8, 257, 77}, {9, 48, 96}, {33, 100, 17}};

}  // namespace

TEST_CASE("gemm: f32 linear (GEMV and GEMM paths) with bias and activation epilogue, 1 and 2 threads") {
    ThreadsGuard g;
    for (int threads : {1, 2}) {
        set_num_threads(threads);
        for (auto [T, K, N] : kShapes) {
            INFO("threads " << threads << " T " << T << " K " << K << " N " << N);
            const auto x = random_floats(size_t(T * K), 1), w = random_floats(size_t(K * N), 2, 0.2f),
                       b = random_floats(size_t(N), 3);
            std::vector<float> fast(size_t(T * N)), ref(size_t(T * N));
            cpu::linear_f32(fast.data(), x.data(), w.data(), b.data(), T, K, N, Activation::GeluTanh);
            ref::linear(ref.data(), x.data(), w.data(), b.data(), T, K, N);
            for (float& r : ref) r = gelu_tanh(r);
            CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 2e-5f * std::sqrt(float(K)));
        }
    }
}

TEST_CASE("gemm: bf16 pair packing puts element (k, n) where the layout says, zero-padding odd K") {
    const int64_t K = 5, N = 3;
    const auto w = random_floats(size_t(K * N), 4);
    std::vector<uint16_t> p(size_t(cpu::bf16_pairs_size(K, N)), 0xFFFF);
    REQUIRE(p.size() == size_t(3 * N * 2));
    cpu::pack_bf16_pairs(p.data(), w.data(), K, N);
    for (int64_t k = 0; k < 6; ++k)
        for (int64_t n = 0; n < N; ++n) {
            const uint16_t got = p[size_t(((k / 2) * N + n) * 2 + k % 2)];
            CHECK(got == (k < K ? f32_to_bf16(w[size_t(k * N + n)]) : uint16_t(0)));
        }
}

TEST_CASE("gemm: bf16 linear equals f32 math on the bf16-rounded weights (both kernels, both paths)") {
    ThreadsGuard g;
    // The activations are split hi + lo in bf16, so only the weights are rounded: against the
    // reference on rounded weights the error is that of the split (~2^-16 relative) plus f32 sums.
    INFO("bf16 kernel on this CPU: " << cpu::bf16_kernel_name());
    for (int threads : {1, 2}) {
        set_num_threads(threads);
        for (auto [T, K, N] : kShapes) {
            INFO("threads " << threads << " T " << T << " K " << K << " N " << N);
            const auto x = random_floats(size_t(T * K), 5), w = random_floats(size_t(K * N), 6, 0.2f),
                       b = random_floats(size_t(N), 7);
            const auto wr = rounded_to_bf16(w);
            std::vector<uint16_t> p(size_t(cpu::bf16_pairs_size(K, N)));
            cpu::pack_bf16_pairs(p.data(), w.data(), K, N);
            std::vector<float> fast(size_t(T * N)), ref(size_t(T * N));
            cpu::linear_bf16(fast.data(), x.data(), p.data(), b.data(), T, K, N, Activation::Relu);
            ref::linear(ref.data(), x.data(), wr.data(), b.data(), T, K, N);
            for (float& r : ref) r = relu(r);
            CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 3e-5f * std::sqrt(float(K)));
        }
    }
}

TEST_CASE("gemm: the LM head x . E^T in f32 and bf16 matches the reference") {
    ThreadsGuard g;
    for (int threads : {1, 2}) {
        set_num_threads(threads);
        for (auto [T, C, V] : std::vector<std::array<int64_t, 3>>{{1, 8, 1000}, {3, 45, 517}, {1, 768, 2051}, {12, 64, 300}}) {
            INFO("threads " << threads << " T " << T << " C " << C << " V " << V);
            const auto x = random_floats(size_t(T * C), 8), e = random_floats(size_t(V * C), 9, 0.1f);
            std::vector<float> fast(size_t(T * V)), ref(size_t(T * V));
            cpu::matmul_nt_f32(fast.data(), x.data(), e.data(), T, C, V);
            ref::matmul_nt(ref.data(), x.data(), e.data(), T, C, V);
            CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 2e-5f * std::sqrt(float(C)));
            std::vector<uint16_t> eb(e.size());
            for (size_t i = 0; i < e.size(); ++i) eb[i] = f32_to_bf16(e[i]);
            const auto er = rounded_to_bf16(e);
            cpu::matmul_nt_bf16(fast.data(), x.data(), eb.data(), T, C, V);
            ref::matmul_nt(ref.data(), x.data(), er.data(), T, C, V);
            CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 3e-5f * std::sqrt(float(C)));
        }
    }
}

TEST_CASE("gemm: the residual add fused with LayerNorm equals add then layernorm, also in place") {
    const int64_t T = 5, C = 96;
    auto x = random_floats(size_t(T * C), 10), y = random_floats(size_t(T * C), 11);
    const auto g = random_floats(size_t(C), 12), b = random_floats(size_t(C), 13);
    std::vector<float> x2 = x, out(size_t(T * C)), ref(size_t(T * C));
    for (size_t i = 0; i < x2.size(); ++i) x2[i] += y[i];
    ref::layernorm(ref.data(), x2.data(), g.data(), b.data(), T, C, 1e-5f);
    cpu::add_layernorm(y.data(), x.data(), y.data(), g.data(), b.data(), T, C, 1e-5f);  // out aliases y
    CHECK(max_abs_diff(x.data(), x2.data(), x.size()) == 0.0f);
    CHECK(max_abs_diff(y.data(), ref.data(), y.size()) < 1e-5f);
}

TEST_CASE("gemm: kernels::linear takes packed bf16 weights and refuses a wrong packing") {
    const int64_t T = 2, K = 9, N = 20;
    Tensor x = Tensor::empty({T, K}, DType::F32), w = Tensor::empty({K, N}, DType::F32);
    const auto xv = random_floats(size_t(T * K), 14), wv = random_floats(size_t(K * N), 15);
    std::copy(xv.begin(), xv.end(), x.data<float>());
    std::copy(wv.begin(), wv.end(), w.data<float>());
    const Tensor p = kernels::pack_bf16_pairs(w);
    CHECK(p.shape() == Shape({5, N, 2}));
    Tensor out = Tensor::empty({T, N}, DType::F32), ref = Tensor::empty({T, N}, DType::F32);
    kernels::linear(out, x, p, Tensor());
    const auto wr = rounded_to_bf16(wv);
    ref::linear(ref.data<float>(), xv.data(), wr.data(), nullptr, T, K, N);
    CHECK(max_abs_diff(out.data<float>(), ref.data<float>(), size_t(T * N)) < 1e-4f);
    // Packed for another K: refused, naming the expectation.
    CHECK_THROWS_WITH_AS(kernels::linear(out, Tensor::empty({T, 11}, DType::F32), p, Tensor()),
                         doctest::Contains("linear"), Error);
    CHECK_NOTHROW(kernels::linear(out, Tensor::empty({T, 10}, DType::F32), p, Tensor()));  // ceil(10/2) = 5
}

TEST_CASE("gemm: the portable bf16 kernels agree with the AVX-512 ones") {
    if (!cpu::cpu_has_avx512bf16()) {
        MESSAGE("this CPU has no AVX-512 BF16: only the portable kernels exist here (checked above)");
        return;
    }
    const int64_t K = 130, N = 70, V = 300;
    const auto w = random_floats(size_t(K * N), 17, 0.2f), e = random_floats(size_t(V * K), 18, 0.1f);
    std::vector<uint16_t> p(size_t(cpu::bf16_pairs_size(K, N))), eb(e.size());
    cpu::pack_bf16_pairs(p.data(), w.data(), K, N);
    for (size_t i = 0; i < e.size(); ++i) eb[i] = f32_to_bf16(e[i]);
    for (int64_t T : {1, 3, 8}) {
        CAPTURE(T);
        const auto x = random_floats(size_t(T * K), 16);
        std::vector<float> fast(size_t(T * N)), port(size_t(T * N)), hf(size_t(T * V)), hp(size_t(T * V));
        cpu::set_bf16_portable(false);
        REQUIRE(cpu::bf16_kernel_name() == "avx512bf16");
        cpu::linear_bf16(fast.data(), x.data(), p.data(), nullptr, T, K, N);
        cpu::matmul_nt_bf16(hf.data(), x.data(), eb.data(), T, K, V);
        cpu::set_bf16_portable(true);
        REQUIRE(cpu::bf16_kernel_name() == "portable");
        cpu::linear_bf16(port.data(), x.data(), p.data(), nullptr, T, K, N);
        cpu::matmul_nt_bf16(hp.data(), x.data(), eb.data(), T, K, V);
        cpu::set_bf16_portable(false);
        CHECK(max_abs_diff(fast.data(), port.data(), fast.size()) < 1e-4f);
        CHECK(max_abs_diff(hf.data(), hp.data(), hf.size()) < 1e-4f);
    }
}

TEST_CASE("parallel: parallel_for covers the range once in grain-aligned blocks and carries exceptions out") {
    ThreadsGuard g;
    for (int threads : {1, 2, 3}) {
        set_num_threads(threads);
        CHECK(num_threads() == threads);
        for (int64_t n : {1, 63, 64, 65, 1000}) {
            std::vector<int> hits(size_t(n), 0);
            parallel_for(n, 16, [&](int64_t b, int64_t e) {
                CHECK(b % 16 == 0);
                for (int64_t i = b; i < e; ++i) ++hits[size_t(i)];
            });
            CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
        }
        CHECK_THROWS_WITH_AS(parallel_for(100, 1, [](int64_t b, int64_t) {
                                 if (b > 0) fail("block at {}", b);
                                 if (num_threads() == 1) fail("block at {}", b);
                             }),
                             doctest::Contains("block at"), Error);
    }
    CHECK_THROWS_WITH_AS(set_num_threads(0), doctest::Contains("at least 1"), Error);
}

TEST_CASE("gemm: attention with heads side by side (scratch slices, 2 threads) equals the reference") {
    ThreadsGuard g;
    set_num_threads(2);
    const int64_t H = 6, G = 3, D = 8, cap = 40, P = 11, T = 9, W = (H + 2 * G) * D;
    const auto qkv = random_floats(size_t(T * W), 21);
    auto kc = random_floats(size_t(G * cap * D), 22), vc = random_floats(size_t(G * cap * D), 23);
    cpu::kv_append(kc.data(), vc.data(), qkv.data(), T, P, G, D, cap, H);
    std::vector<float> ref(size_t(T * H * D)), fast(ref.size());
    ref::attention(ref.data(), H * D, qkv.data(), W, kc.data(), vc.data(), T, P, H, D, cap, 0.3f, H / G);
    for (int64_t slices : {1, 2, 4, 6}) {
        CAPTURE(slices);
        std::vector<float> scratch(size_t(slices * T * (P + T)));
        cpu::attention(fast.data(), H * D, qkv.data(), W, kc.data(), vc.data(), T, P, H, D, cap, 0.3f, scratch.data(),
                       H / G, slices);
        CHECK(max_abs_diff(fast.data(), ref.data(), ref.size()) < 1e-5f);
    }
}

TEST_CASE("gemm: a GPT-2 with bf16 matrices on the CPU stays close to f32 and keeps its greedy path") {
    // bf16 rounds each weight by up to 2^-9 relative; the logits move by a small fraction of their
    // spread. The bundled model's tests pin f32 exactly; here the bf16 path must run end to end,
    // cached = batched, and stay near f32.
    const auto dir = stac::test::gpt2_fixture("tiny-gelu-f32");
    auto f32 = Gpt2Model::load(dir);
    auto b16 = Gpt2Model::load(dir);
    b16->set_weight_format(WeightFormat::BF16);
    CHECK(b16->weight_format() == WeightFormat::BF16);
    const std::vector<int32_t> ids = {1, 5, 9, 2, 7, 3, 8, 4, 6, 0, 11, 12};
    const int64_t V = f32->info().vocab_size, T = int64_t(ids.size());
    Tensor a = Tensor::empty({T, V}, DType::F32), b = Tensor::empty({T, V}, DType::F32), c = Tensor::empty({1, V}, DType::F32);
    auto sa = f32->new_state(), sb = b16->new_state(), sc = b16->new_state();
    f32->forward(ids, *sa, LogitRows::All, a);
    b16->forward(ids, *sb, LogitRows::All, b);
    float spread = 0;
    for (int64_t i = 0; i < T * V; ++i) spread = std::max(spread, std::fabs(a.data<float>()[i]));
    CHECK(max_abs_diff(a.data<float>(), b.data<float>(), size_t(T * V)) < 0.02f * spread);
    for (int64_t t = 0; t < T; ++t) b16->forward(std::span<const int32_t>(&ids[size_t(t)], 1), *sc, LogitRows::Last, c);
    CHECK(max_abs_diff(c.data<float>(), b.data<float>() + (T - 1) * V, size_t(V)) < 1e-4f);  // cached = batched
}
