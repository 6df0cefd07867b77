// kernels: every fast CPU op against the plain reference loops (kernels/cpu/reference.h).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/gemm.h"
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
            cpu::linear_f32(fast.data(), x.data(), w.data(), bias, T, K, N);
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
    cpu::matmul_nt_f32(fast.data(), x.data(), e.data(), T, C, V);
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

TEST_CASE("kernels: online softmax (the GPU attention's running form) equals the two-pass softmax") {
    // Weighted sums of values v_j with softmax(s) weights, taken chunk by chunk with
    // softmax_rescale and merged across splits with softmax_merge, against the direct formula.
    for (int n : {1, 5, 64, 333}) {
        const auto s = random_floats(size_t(n), 40 + uint64_t(n), 3.0f), v = random_floats(size_t(n), 50 + uint64_t(n));
        double m = -INFINITY, den = 0, num = 0;
        for (int j = 0; j < n; ++j) m = std::max(m, double(s[size_t(j)]));
        for (int j = 0; j < n; ++j) den += std::exp(s[size_t(j)] - m), num += std::exp(s[size_t(j)] - m) * v[size_t(j)];
        const double want = num / den;
        for (int chunk : {1, 7, 32}) {
            // Two splits, each processed in chunks, then merged.
            const int half = n / 2;
            SoftmaxRunning part[2];
            float acc[2] = {0, 0};
            for (int z = 0; z < 2; ++z) {
                const int lo = z == 0 ? 0 : half, hi = z == 0 ? half : n;
                for (int c0 = lo; c0 < hi; c0 += chunk) {
                    const int c1 = std::min(hi, c0 + chunk);
                    float cm = -INFINITY;
                    for (int j = c0; j < c1; ++j) cm = std::max(cm, s[size_t(j)]);
                    const float m_new = std::max(part[z].m, cm);
                    const float corr = softmax_rescale(part[z].m, m_new);
                    float l = 0, a = 0;
                    for (int j = c0; j < c1; ++j) {
                        const float p = std::exp(s[size_t(j)] - m_new);
                        l += p, a += p * v[size_t(j)];
                    }
                    part[z].l = part[z].l * corr + l;
                    acc[z] = acc[z] * corr + a;
                    part[z].m = m_new;
                }
            }
            SoftmaxRunning all;
            float fa0, fb0, fa1, fb1;
            softmax_merge(all, part[0], &fa0, &fb0);
            softmax_merge(all, part[1], &fa1, &fb1);
            const float got = (acc[0] * fb0 * fa1 + acc[1] * fb1) / all.l;
            CHECK(got == doctest::Approx(want).epsilon(1e-5));
        }
    }
    // An empty split (no visible keys) contributes nothing and produces no NaN.
    SoftmaxRunning a, empty;
    float fa, fb;
    softmax_merge(a, SoftmaxRunning{1.0f, 2.0f}, &fa, &fb);
    softmax_merge(a, empty, &fa, &fb);
    CHECK(fb == 0.0f);
    CHECK(fa == 1.0f);
    CHECK(a.l == 2.0f);
}

TEST_CASE("kernels: linear_activation and add_layernorm equal their unfused steps") {
    const int64_t T = 5, K = 24, N = 40, C = 40;
    const auto xv = random_floats(size_t(T * K), 60), wv = random_floats(size_t(K * N), 61, 0.3f), bv = random_floats(size_t(N), 62);
    auto make = [](const std::vector<float>& v, Shape s) {
        Tensor t = Tensor::empty(s, DType::F32);
        std::copy(v.begin(), v.end(), t.data<float>());
        return t;
    };
    const Tensor x = make(xv, {T, K}), w = make(wv, {K, N}), b = make(bv, {N});
    for (Activation a : {Activation::GeluTanh, Activation::GeluErf, Activation::Relu}) {
        Tensor fused = Tensor::empty({T, N}, DType::F32), plain = Tensor::empty({T, N}, DType::F32);
        kernels::linear_activation(fused, x, w, b, a);
        kernels::linear(plain, x, w, b);
        kernels::activation(plain, a);
        CHECK(std::equal(fused.data<float>(), fused.data<float>() + T * N, plain.data<float>()));
    }
    const auto r = random_floats(size_t(T * C), 63), y = random_floats(size_t(T * C), 64);
    const Tensor g = make(random_floats(size_t(C), 65), {C}), bb = make(random_floats(size_t(C), 66), {C});
    Tensor x1 = make(r, {T, C}), y1 = make(y, {T, C});
    Tensor x2 = make(r, {T, C}), y2 = make(y, {T, C}), out2 = Tensor::empty({T, C}, DType::F32);
    kernels::add_layernorm(x1, y1, y1, g, bb, 1e-5f);  // out aliases y, as the GPT-2 forward uses it
    kernels::add(x2, y2);
    kernels::layernorm(out2, x2, g, bb, 1e-5f);
    CHECK(std::equal(x1.data<float>(), x1.data<float>() + T * C, x2.data<float>()));
    CHECK(std::equal(y1.data<float>(), y1.data<float>() + T * C, out2.data<float>()));
    CHECK_THROWS_WITH_AS(kernels::add_layernorm(x1, make(y, {C, T}), y1, g, bb, 1e-5f), doctest::Contains("add_layernorm: y"), Error);
}

TEST_CASE("kernels: top_k orders by value, ties to the lower id, NaN never chosen") {
    const int64_t V = 10, k = 4;
    Tensor l = Tensor::empty({2, V}, DType::F32), vals = Tensor::empty({2, k}, DType::F32), idx = Tensor::empty({2, k}, DType::I32);
    const float row0[V] = {1, 5, 3, 5, NAN, -2, 5, 0, 4, 3};
    const float row1[V] = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, 2, 1};
    std::copy(row0, row0 + V, l.data<float>());
    std::copy(row1, row1 + V, l.data<float>() + V);
    kernels::top_k(vals, idx, l);
    const int32_t* i = idx.data<int32_t>();
    CHECK(std::vector<int32_t>(i, i + 4) == std::vector<int32_t>{1, 3, 6, 8});
    CHECK(vals.data<float>()[3] == 4.0f);
    CHECK(std::vector<int32_t>(i + 4, i + 8) == std::vector<int32_t>{8, 9, -1, -1});
    CHECK(std::isnan(vals.data<float>()[7]));
    Tensor big = Tensor::empty({2, 65}, DType::F32), bigi = Tensor::empty({2, 65}, DType::I32);
    CHECK_THROWS_WITH_AS(kernels::top_k(big, bigi, l), doctest::Contains("k = 65"), Error);
}

TEST_CASE("kernels: f16/bf16 weights are refused on the CPU with a clear message") {
    Tensor x = Tensor::zeros({1, 4}, DType::F32), w = Tensor::zeros({4, 4}, DType::F16), out = Tensor::empty({1, 4}, DType::F32);
    CHECK_THROWS_WITH_AS(kernels::linear(out, x, w, Tensor()), doctest::Contains("expected F32"), Error);
}

TEST_CASE("kernels: the decode-step ops reading {id, pos} from a tensor equal the plain ones") {
    const int64_t V = 30, NP = 16, H = 2, D = 4, C = H * D, cap = 16, P = 6;
    auto make = [](Shape s, uint64_t seed) {
        Tensor t = Tensor::empty(s, DType::F32);
        const auto v = random_floats(size_t(t.numel()), seed);
        std::copy(v.begin(), v.end(), t.data<float>());
        return t;
    };
    const Tensor wte = make({V, C}, 70), wpe = make({NP, C}, 71), qkv = make({1, 3 * C}, 72);
    Tensor step = Tensor::empty({2}, DType::I32);
    step.data<int32_t>()[0] = 17, step.data<int32_t>()[1] = int32_t(P);
    Tensor a = Tensor::empty({1, C}, DType::F32), b = Tensor::empty({1, C}, DType::F32);
    const int32_t id[1] = {17};
    kernels::embedding_at(a, step, wte, wpe);
    kernels::embedding(b, id, P, wte, wpe);
    CHECK(std::equal(a.data<float>(), a.data<float>() + C, b.data<float>()));
    Tensor k1 = make({H, cap, D}, 73), v1 = make({H, cap, D}, 74), k2 = k1.clone(), v2 = v1.clone();
    kernels::kv_append_at(k1, v1, qkv, step);
    kernels::kv_append(k2, v2, qkv, P);
    CHECK(std::equal(k1.data<float>(), k1.data<float>() + k1.numel(), k2.data<float>()));
    CHECK(std::equal(v1.data<float>(), v1.data<float>() + v1.numel(), v2.data<float>()));
    Tensor scratch = Tensor::empty({P + 1}, DType::F32);
    kernels::attention_at(a, qkv, k1, v1, step, 0.5f, scratch);
    kernels::attention(b, qkv, k2, v2, P, 0.5f, scratch);
    CHECK(std::equal(a.data<float>(), a.data<float>() + C, b.data<float>()));
    CHECK_THROWS_WITH_AS(kernels::embedding_at(a, Tensor::empty({3}, DType::I32), wte, wpe), doctest::Contains("step"), Error);
}

TEST_CASE("kernels: fill sets every element, F32, F64 and I32") {
    Tensor a = Tensor::empty({7}, DType::F32), b = Tensor::empty({3, 2}, DType::F64), c = Tensor::empty({5}, DType::I32);
    kernels::fill(a, 0.25), kernels::fill(b, 0.5), kernels::fill(c, -3);
    CHECK(std::all_of(a.data<float>(), a.data<float>() + 7, [](float x) { return x == 0.25f; }));
    CHECK(std::all_of(b.data<double>(), b.data<double>() + 6, [](double x) { return x == 0.5; }));
    CHECK(std::all_of(c.data<int32_t>(), c.data<int32_t>() + 5, [](int32_t x) { return x == -3; }));
    CHECK_THROWS_WITH_AS(kernels::fill(Tensor::empty({2}, DType::I8), 1), doctest::Contains("expected F32, F64 or I32"), Error);
}
