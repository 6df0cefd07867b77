// kernels: every fast CPU op against the plain reference loops (kernels/cpu/reference.h).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/reference.h"
#include "kernels/kernels.h"
#include "tests/helpers.h"

using namespace stac;
using stac::test::max_abs_diff;
using stac::test::random_floats;

TEST_CASE("kernels: linear matches the reference for many shapes, with and without bias") {
    for (auto [T, K, N] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {1, 64, 192}, {7, 48, 96}, {33, 100, 17}, {5, 256, 1000}}) {
        const auto x = random_floats(size_t(T * K), 1), w = random_floats(size_t(K * N), 2, 0.2f), b = random_floats(size_t(N), 3);
        std::vector<float> fast(size_t(T * N)), ref(size_t(T * N));
        for (const float* bias : {b.data(), static_cast<const float*>(nullptr)}) {
            cpu::linear(fast.data(), x.data(), w.data(), bias, T, K, N);
            ref::linear(ref.data(), x.data(), w.data(), bias, T, K, N);
            CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 2e-5f * std::sqrt(float(K)));
        }
    }
}

TEST_CASE("kernels: layernorm matches the reference, including large offsets") {
    for (auto [T, C] : std::vector<std::array<int64_t, 2>>{{1, 8}, {9, 64}, {4, 768}}) {
        auto x = random_floats(size_t(T * C), 4);
        for (size_t i = 0; i < x.size(); ++i) x[i] += 30.0f;  // a mean far from zero tests the two-pass variance
        const auto g = random_floats(size_t(C), 5), b = random_floats(size_t(C), 6);
        std::vector<float> fast(x.size()), ref(x.size());
        cpu::layernorm(fast.data(), x.data(), g.data(), b.data(), T, C, 1e-5f);
        ref::layernorm(ref.data(), x.data(), g.data(), b.data(), T, C, 1e-5f);
        CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 5e-5f);
    }
}

TEST_CASE("kernels: activations match their definitions") {
    // Known values (from the formulas, computed in double by hand-checked expressions).
    const double xs[] = {-5.0, -1.5, -0.1, 0.0, 0.3, 1.0, 2.5, 8.0};
    for (double x : xs) {
        const double tanh_ref = 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
        const double erf_ref = 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
        CHECK(gelu_tanh(float(x)) == doctest::Approx(tanh_ref).epsilon(1e-6));
        CHECK(gelu_erf(float(x)) == doctest::Approx(erf_ref).epsilon(1e-6));
        CHECK(relu(float(x)) == float(x > 0 ? x : 0));
    }
    for (Activation a : {Activation::GeluTanh, Activation::GeluErf, Activation::Relu}) {
        auto x = random_floats(1000, 7, 3.0f), y = x;
        cpu::activation(x.data(), 1000, a);
        ref::activation(y.data(), 1000, a);
        CHECK(max_abs_diff(x.data(), y.data(), 1000) == 0.0f);
    }
}

TEST_CASE("kernels: attention over a cache matches the reference for prefill and decode") {
    const int64_t H = 3, D = 8, C = H * D, cap = 40;
    for (auto [P, T] : std::vector<std::array<int64_t, 2>>{{0, 1}, {0, 13}, {5, 1}, {17, 6}, {39, 1}, {0, 40}}) {
        const auto qkv = random_floats(size_t(T * 3 * C), 10 + P, 1.5f);
        std::vector<float> kc(size_t(H * cap * D), 0.0f), vc(kc.size(), 0.0f);
        // Earlier tokens in the cache, then the new ones appended from qkv.
        const auto past_k = random_floats(kc.size(), 20 + P, 1.5f), past_v = random_floats(vc.size(), 30 + P);
        for (int64_t h = 0; h < H; ++h)
            for (int64_t j = 0; j < P * D; ++j) {
                kc[size_t(h * cap * D + j)] = past_k[size_t(h * cap * D + j)];
                vc[size_t(h * cap * D + j)] = past_v[size_t(h * cap * D + j)];
            }
        cpu::kv_append(kc.data(), vc.data(), qkv.data(), T, P, H, D, cap);
        // kv_append put token t's K of head h at row P + t.
        for (int64_t t = 0; t < T; ++t)
            for (int64_t h = 0; h < H; ++h)
                for (int64_t d = 0; d < D; ++d) {
                    REQUIRE(kc[size_t((h * cap + P + t) * D + d)] == qkv[size_t(t * 3 * C + C + h * D + d)]);
                    REQUIRE(vc[size_t((h * cap + P + t) * D + d)] == qkv[size_t(t * 3 * C + 2 * C + h * D + d)]);
                }
        std::vector<float> fast(size_t(T * C)), ref(size_t(T * C)), scratch(size_t(T * (P + T)));
        const float scale = 1.0f / std::sqrt(float(D));
        cpu::attention(fast.data(), C, qkv.data(), 3 * C, kc.data(), vc.data(), T, P, H, D, cap, scale, scratch.data());
        ref::attention(ref.data(), C, qkv.data(), 3 * C, kc.data(), vc.data(), T, P, H, D, cap, scale);
        CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 1e-5f);
    }
}

TEST_CASE("kernels: the first query attends only to itself (causal mask)") {
    // With T = 2 and P = 0, output row 0 must equal V of token 0 exactly (softmax over one key).
    const int64_t H = 2, D = 4, C = H * D, cap = 4;
    const auto qkv = random_floats(size_t(2 * 3 * C), 99);
    std::vector<float> kc(size_t(H * cap * D)), vc(kc.size()), out(size_t(2 * C)), scratch(4);
    cpu::kv_append(kc.data(), vc.data(), qkv.data(), 2, 0, H, D, cap);
    cpu::attention(out.data(), C, qkv.data(), 3 * C, kc.data(), vc.data(), 2, 0, H, D, cap, 0.5f, scratch.data());
    for (int64_t c = 0; c < C; ++c) CHECK(out[size_t(c)] == doctest::Approx(qkv[size_t(2 * C + c)]).epsilon(1e-6));
}

TEST_CASE("kernels: matmul_nt (tied LM head) matches the reference") {
    const int64_t T = 3, C = 64, V = 777;
    const auto x = random_floats(size_t(T * C), 40), e = random_floats(size_t(V * C), 41, 0.3f);
    std::vector<float> fast(size_t(T * V)), ref(size_t(T * V));
    cpu::matmul_nt(fast.data(), x.data(), e.data(), T, C, V);
    ref::matmul_nt(ref.data(), x.data(), e.data(), T, C, V);
    CHECK(max_abs_diff(fast.data(), ref.data(), fast.size()) < 1e-4f);
}

TEST_CASE("kernels: the Tensor API checks shapes, dtypes and ids") {
    Tensor x = Tensor::zeros({2, 4}, DType::F32), w = Tensor::zeros({4, 3}, DType::F32), out = Tensor::zeros({2, 3}, DType::F32);
    CHECK_NOTHROW(kernels::linear(out, x, w, Tensor()));
    CHECK_THROWS_AS(kernels::linear(out, x, Tensor::zeros({5, 3}, DType::F32), Tensor()), Error);
    CHECK_THROWS_AS(kernels::linear(Tensor::zeros({2, 4}, DType::F32), x, w, Tensor()), Error);
    CHECK_THROWS_AS(kernels::linear(out, x.to(DType::F16), w, Tensor()), Error);
    const Tensor wte = Tensor::zeros({10, 4}, DType::F32), wpe = Tensor::zeros({6, 4}, DType::F32);
    const int32_t bad[] = {3, 10};
    CHECK_THROWS_WITH_AS(kernels::embedding(x, bad, 0, wte, wpe), doctest::Contains("token id 10"), Error);
    const int32_t good[] = {3, 9};
    CHECK_NOTHROW(kernels::embedding(x, good, 4, wte, wpe));
    CHECK_THROWS_WITH_AS(kernels::embedding(x, good, 5, wte, wpe), doctest::Contains("positions"), Error);
}
