// GPU: device memory, every CUDA kernel against the CPU kernel on the same inputs, and the GPT-2
// forward end to end (logits, greedy continuations, cached = one-shot, no cudaMalloc while
// decoding). Skipped visibly (CTest: Skipped) without a GPU. Exact kernels (copies, spiking
// integer arithmetic) must match bit for bit; float kernels within a tolerance scaled to the sums.
// Letters: T tokens, K inputs, N outputs, C channels, H heads, D head dim, P cached, S timesteps.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/allocator.h"
#include "convert/convert.h"
#include "convert/spiking_gpt2.h"
#include "core/tensor.h"
#include "kernels/kernels.h"
#include "kernels/spiking.h"
#include "models/gpt2.h"
#include "models/model_dir.h"
#include "models/session.h"
#include "tests/gpu_skip.h"
#include "tests/helpers.h"
#ifdef STAC_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

using namespace stac;
using stac::test::random_floats;

namespace {

const Device kGpu = Device::cuda(0);

Tensor host_f32(const std::vector<float>& v, Shape s) {
    Tensor t = Tensor::empty(s, DType::F32);
    REQUIRE(size_t(t.numel()) == v.size());
    std::copy(v.begin(), v.end(), t.data<float>());
    return t;
}
Tensor rnd(Shape s, uint64_t seed, float scale = 1.0f) {
    Tensor t = Tensor::empty(s, DType::F32);
    const auto v = random_floats(size_t(t.numel()), seed, scale);
    std::copy(v.begin(), v.end(), t.data<float>());
    return t;
}
Tensor rnd_i8(Shape s, uint64_t seed, int lo, int hi, double zero_fraction = 0.0) {
    Tensor t = Tensor::empty(s, DType::I8);
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> d(lo, hi);
    std::uniform_real_distribution<double> u(0, 1);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<int8_t>()[i] = int8_t(u(rng) < zero_fraction ? 0 : d(rng));
    return t;
}
Tensor gpu(const Tensor& t) { return t.to(kGpu); }
Tensor cpu(const Tensor& t) { return t.to(Device::cpu()); }

// max |a - b| over max(1, max |b|): a relative error for float kernels.
float rel_diff(const Tensor& a_any, const Tensor& b_any) {
    const Tensor a = cpu(a_any), b = cpu(b_any);
    REQUIRE(a.numel() == b.numel());
    float m = 0, s = 1;
    for (int64_t i = 0; i < a.numel(); ++i) {
        m = std::max(m, std::fabs(a.data<float>()[i] - b.data<float>()[i]));
        s = std::max(s, std::fabs(b.data<float>()[i]));
    }
    return m / s;
}
bool same_bytes(const Tensor& a_any, const Tensor& b_any) {
    const Tensor a = cpu(a_any), b = cpu(b_any);
    return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}
// f32 values rounded through f16 or bf16 (what the GPU computes from with reduced weights).
Tensor rounded(const Tensor& t, DType dt) { return t.to(dt).to(DType::F32); }

}  // namespace

TEST_SUITE("gpu") {
    TEST_CASE("gpu: host -> device -> host round trip keeps every byte") {
        STAC_REQUIRE_GPU();
        const auto v = stac::test::random_floats(4097, 5);
        Tensor h = Tensor::empty({4097}, DType::F32);
        std::copy(v.begin(), v.end(), h.data<float>());
        const Tensor d = h.to(Device::cuda(0));
        CHECK(d.device() == Device::cuda(0));
        const Tensor d2 = d.clone();  // device -> device
        const Tensor back = d2.to(Device::cpu());
        CHECK(std::equal(v.begin(), v.end(), back.data<float>()));
        CHECK_THROWS_AS(d.data<float>(), Error);  // not host memory
        // A large copy goes through the pinned staging buffers (several chunks).
        const Tensor big = rnd({5 << 20}, 6);
        CHECK(same_bytes(big.to(kGpu), big));
        CHECK(same_bytes(Tensor::zeros({1000}, DType::F32, kGpu), Tensor::zeros({1000}, DType::F32)));
    }

    TEST_CASE("gpu: a device index past the last GPU is refused clearly") {
        STAC_REQUIRE_GPU();
        const int n = cuda_device_count();
        CHECK_THROWS_WITH_AS(Tensor::empty({4}, DType::F32, Device::cuda(n)), doctest::Contains("GPU(s) present"), Error);
        CHECK(device_description(kGpu).find("sm_") != std::string::npos);
    }

    TEST_CASE("gpu: the caching allocator reuses freed blocks without cudaMalloc") {
        STAC_REQUIRE_GPU();
        { Tensor warm = Tensor::empty({12345}, DType::F32, kGpu); }
        const uint64_t a0 = allocation_count();
        for (int i = 0; i < 10; ++i) {
            Tensor t = Tensor::empty({12345}, DType::F32, kGpu);
            Tensor u = Tensor::empty({12000}, DType::F32, kGpu);  // same size class: a second block once
            (void)u;
        }
        CHECK(allocation_count() <= a0 + 1);
        const CudaPoolStats s = cuda_pool_stats(0);
        CHECK(s.cached > 0);
    }

    TEST_CASE("gpu: linear, linear_activation and matmul_nt match the CPU (f32, f16, bf16 weights)") {
        STAC_REQUIRE_GPU();
        for (auto [T, K, N] : std::vector<std::array<int64_t, 3>>{{1, 64, 192}, {7, 48, 96}, {33, 100, 17}}) {
            const Tensor x = rnd({T, K}, 1), w = rnd({K, N}, 2, 0.2f), b = rnd({N}, 3);
            for (DType wdt : {DType::F32, DType::F16, DType::BF16}) {
                CAPTURE(int(wdt));
                // The CPU reference sees the same rounded operands the GPU uses.
                const Tensor xr = wdt == DType::F32 ? x : rounded(x, wdt), wr = wdt == DType::F32 ? w : rounded(w, wdt);
                Tensor want = Tensor::empty({T, N}, DType::F32), got = Tensor::empty({T, N}, DType::F32, kGpu);
                const Tensor wg = gpu(w.to(wdt));
                kernels::linear(want, xr, wr, b);
                kernels::linear(got, gpu(x), wg, gpu(b));
                // Products of rounded operands are exact in f32; only the summation order (and the
                // tensor cores' accumulation) differs.
                const float tol = wdt == DType::F32 ? 1e-5f : 1e-4f;
                CHECK(rel_diff(got, want) < tol);
                kernels::linear(want, xr, wr, Tensor());
                kernels::linear(got, gpu(x), wg, Tensor());
                CHECK(rel_diff(got, want) < tol);
                for (Activation a : {Activation::GeluTanh, Activation::GeluErf, Activation::Relu}) {
                    kernels::linear_activation(want, xr, wr, b, a);
                    kernels::linear_activation(got, gpu(x), wg, gpu(b), a);
                    CHECK(rel_diff(got, want) < tol);
                }
                const Tensor e = rnd({N, K}, 4, 0.2f), er = wdt == DType::F32 ? e : rounded(e, wdt);
                kernels::matmul_nt(want, xr, er);
                kernels::matmul_nt(got, gpu(x), gpu(e.to(wdt)));
                CHECK(rel_diff(got, want) < tol);
            }
        }
    }

    TEST_CASE("gpu: layernorm, add_layernorm and the element-wise kernels match the CPU") {
        STAC_REQUIRE_GPU();
        for (auto [T, C] : std::vector<std::array<int64_t, 2>>{{1, 8}, {9, 64}, {4, 768}, {3, 1600}}) {
            Tensor x = rnd({T, C}, 4);
            for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += 30.0f;  // a large mean
            const Tensor g = rnd({C}, 5), b = rnd({C}, 6), y = rnd({T, C}, 7);
            Tensor want = Tensor::empty({T, C}, DType::F32), got = Tensor::empty({T, C}, DType::F32, kGpu);
            kernels::layernorm(want, x, g, b, 1e-5f);
            kernels::layernorm(got, gpu(x), gpu(g), gpu(b), 1e-5f);
            CHECK(rel_diff(got, want) < 1e-5f);
            Tensor xc = x.clone(), yc = y.clone(), xg = gpu(x), yg = gpu(y);
            kernels::add_layernorm(xc, yc, yc, g, b, 1e-5f);
            kernels::add_layernorm(xg, yg, yg, gpu(g), gpu(b), 1e-5f);
            CHECK(same_bytes(xg, xc));  // the residual add is one f32 add either way
            CHECK(rel_diff(yg, yc) < 1e-5f);
        }
        const Tensor a = rnd({1000}, 8, 3.0f), c = rnd({1000}, 9);
        for (Activation act : {Activation::GeluTanh, Activation::GeluErf, Activation::Relu}) {
            Tensor h = a.clone(), d = gpu(a);
            kernels::activation(h, act);
            kernels::activation(d, act);
            CHECK(rel_diff(d, h) < 1e-6f);
        }
        Tensor h = a.clone(), d = gpu(a);
        kernels::add(h, c), kernels::add(d, gpu(c));
        CHECK(same_bytes(d, h));
        Tensor o = Tensor::empty({1000}, DType::F32), og = Tensor::empty({1000}, DType::F32, kGpu);
        kernels::scaled_copy(o, a, 0.37f), kernels::scaled_copy(og, gpu(a), 0.37f);
        CHECK(same_bytes(og, o));
        Tensor sum = Tensor::zeros({1000}, DType::F64), sumg = Tensor::zeros({1000}, DType::F64, kGpu);
        Tensor val = Tensor::empty({1000}, DType::F32), valg = Tensor::empty({1000}, DType::F32, kGpu);
        for (int i = 0; i < 3; ++i) kernels::accumulate(sum, a, val), kernels::accumulate(sumg, gpu(a), valg);
        CHECK(same_bytes(sumg, sum));
        CHECK(same_bytes(valg, val));
        for (DType dt : {DType::F32, DType::F64, DType::I32}) {
            Tensor f = Tensor::empty({1000}, dt), fg = Tensor::empty({1000}, dt, kGpu);
            kernels::fill(f, 0.5), kernels::fill(fg, 0.5);
            CHECK(same_bytes(fg, f));
        }
        Tensor prev = c.clone(), prevg = gpu(c);
        kernels::td_emit(o, a, prev), kernels::td_emit(og, gpu(a), prevg);
        CHECK(same_bytes(og, o));
        CHECK(same_bytes(prevg, prev));
    }

    TEST_CASE("gpu: embedding and kv_append are exact") {
        STAC_REQUIRE_GPU();
        const int64_t V = 50, NP = 20, C = 24, H = 3, D = 8, cap = 16;
        const Tensor wte = rnd({V, C}, 10), wpe = rnd({NP, C}, 11);
        const std::vector<int32_t> ids = {3, 0, 49, 7, 7};
        for (DType wdt : {DType::F32, DType::F16, DType::BF16}) {
            Tensor want = Tensor::empty({5, C}, DType::F32), got = Tensor::empty({5, C}, DType::F32, kGpu);
            kernels::embedding(want, ids, 4, rounded(wte, wdt), rounded(wpe, wdt));
            kernels::embedding(got, ids, 4, gpu(wte.to(wdt)), gpu(wpe.to(wdt)));
            CHECK(same_bytes(got, want));
        }
        const std::vector<int32_t> bad = {50};
        Tensor o1 = Tensor::empty({1, C}, DType::F32, kGpu);
        CHECK_THROWS_WITH_AS(kernels::embedding(o1, bad, 0, gpu(wte), gpu(wpe)), doctest::Contains("token id 50"), Error);
        const Tensor qkv = rnd({5, 3 * C}, 12);
        Tensor kc = Tensor::zeros({H, cap, D}, DType::F32), vc = Tensor::zeros({H, cap, D}, DType::F32);
        Tensor kg = Tensor::zeros({H, cap, D}, DType::F32, kGpu), vg = Tensor::zeros({H, cap, D}, DType::F32, kGpu);
        kernels::kv_append(kc, vc, qkv, 6), kernels::kv_append(kg, vg, gpu(qkv), 6);
        CHECK(same_bytes(kg, kc));
        CHECK(same_bytes(vg, vc));
    }

    TEST_CASE("gpu: attention (prefill and split-cache decode kernels, MHA and grouped-query) matches the CPU") {
        STAC_REQUIRE_GPU();
        // H query heads over G cached heads (G = H: GPT-2; G < H: grouped-query attention), both
        // kernels and the explicit steps; the cache appended on each side.
        struct Case { int64_t T, P, H, G, D, cap; };
        for (const Case c : {Case{1, 0, 2, 2, 64, 8}, Case{1, 700, 12, 12, 64, 1024}, Case{5, 3, 2, 2, 64, 16},
                             Case{40, 0, 3, 3, 64, 64}, Case{17, 130, 2, 2, 128, 200}, Case{9, 20, 4, 4, 24, 40},
                             Case{3, 257, 1, 1, 40, 300}, Case{1, 0, 6, 2, 64, 8}, Case{1, 300, 9, 3, 64, 512},
                             Case{37, 0, 9, 3, 64, 64}, Case{12, 30, 8, 2, 32, 50}, Case{5, 129, 4, 1, 128, 160}}) {
            CAPTURE(c.T); CAPTURE(c.P); CAPTURE(c.H); CAPTURE(c.G); CAPTURE(c.D);
            const int64_t W = (c.H + 2 * c.G) * c.D, Cq = c.H * c.D, L = c.P + c.T;
            const Tensor qkv = rnd({c.T, W}, 30, 0.5f);
            Tensor kc = rnd({c.G, c.cap, c.D}, 31), vc = rnd({c.G, c.cap, c.D}, 32);
            Tensor kg = gpu(kc), vg = gpu(vc);
            const Tensor qg = gpu(qkv);
            kernels::kv_append(kc, vc, qkv, c.P), kernels::kv_append(kg, vg, qg, c.P);
            CHECK(same_bytes(kg, kc));
            CHECK(same_bytes(vg, vc));
            Tensor want = Tensor::empty({c.T, Cq}, DType::F32), got = Tensor::empty({c.T, Cq}, DType::F32, kGpu);
            Tensor scratch = Tensor::empty({c.H * c.T * L}, DType::F32);
            const float scale = 1.0f / std::sqrt(float(c.D));
            kernels::attention(want, qkv, kc, vc, c.P, scale, scratch);
            kernels::attention(got, qg, kg, vg, c.P, scale, Tensor());
            CHECK(rel_diff(got, want) < 2e-5f);
#ifdef STAC_WITH_CUDA
            for (auto which : {cuda::AttentionKernel::Prefill, cuda::AttentionKernel::Decode}) {
                Tensor g2 = Tensor::empty({c.T, Cq}, DType::F32, kGpu);
                cuda::attention(0, g2.raw_data<float>(), Cq, qg.raw_data<float>(), W, kg.raw_data<float>(),
                                vg.raw_data<float>(), c.T, c.P, c.H, c.D, c.cap, scale, which, c.H / c.G);
                CHECK(rel_diff(g2, want) < 2e-5f);
            }
#endif
            Tensor sw = Tensor::empty({c.H, c.T, L}, DType::F32), sg = Tensor::empty({c.H, c.T, L}, DType::F32, kGpu);
            kernels::attention_scores(sw, qkv, kc, c.P, scale), kernels::attention_scores(sg, qg, kg, c.P, scale);
            CHECK(rel_diff(sg, sw) < 1e-5f);
            kernels::softmax_causal(sw, c.P), kernels::softmax_causal(sg, c.P);
            CHECK(rel_diff(sg, sw) < 1e-5f);
            kernels::attention_pv(want, sw, vc, c.P), kernels::attention_pv(got, sg, vg, c.P);
            CHECK(rel_diff(got, want) < 2e-5f);
        }
    }

    TEST_CASE("gpu: the Llama ops (RMSNorm, the SiLU gate, RoPE) match the CPU") {
        STAC_REQUIRE_GPU();
        // RMSNorm (rows wider and narrower than a block), silu(gate) * up, RoPE at large positions.
        for (int64_t C : {576, 100, 2049}) {
            CAPTURE(C);
            const Tensor x = rnd({7, C}, 33, 2.0f), g = rnd({C}, 34);
            Tensor want = Tensor::empty({7, C}, DType::F32), got = Tensor::empty({7, C}, DType::F32, kGpu);
            kernels::rmsnorm(want, x, g, 1e-5f), kernels::rmsnorm(got, gpu(x), gpu(g), 1e-5f);
            CHECK(rel_diff(got, want) < 1e-5f);
        }
        const Tensor gu = rnd({9, 2 * 1536}, 35, 4.0f);
        Tensor sw = Tensor::empty({9, 1536}, DType::F32), sg = Tensor::empty({9, 1536}, DType::F32, kGpu);
        kernels::silu_gate(sw, gu), kernels::silu_gate(sg, gpu(gu));
        CHECK(rel_diff(sg, sw) < 1e-6f);
        for (int64_t pos0 : {0, 4000}) {
            CAPTURE(pos0);
            Tensor xc = rnd({6, (9 + 2 * 3) * 64}, 36, 1.0f);
            Tensor xg = gpu(xc);
            kernels::rope(xc, 9 + 3, 64, pos0, 100000.0f), kernels::rope(xg, 9 + 3, 64, pos0, 100000.0f);
            CHECK(rel_diff(xg, xc) < 1e-6f);
        }
    }

    TEST_CASE("gpu: Llama models (GQA tied, MHA untied, bf16 shards) on the GPU match the CPU, batched and through the cache") {
        STAC_REQUIRE_GPU();
        for (const char* name : {"tiny-gqa-tied-f32", "tiny-mha-untied-f32", "tiny-gqa-bf16-sharded"}) {
            CAPTURE(name);
            const auto dir = stac::test::fixtures() / "llama" / name;
            const auto cpu_m = load_language_model(dir);
            const auto gpu_m = load_language_model(dir, Placement{kGpu, DType::F32});
            const int64_t V = cpu_m->info().vocab_size, T = 19;
            std::vector<int32_t> ids;
            for (int64_t t = 0; t < T; ++t) ids.push_back(int32_t((t * 41 + 7) % V));
            auto run = [&](const LanguageModel& m, int64_t chunk) {
                Tensor out = Tensor::empty({T, V}, DType::F32);
                auto st = m.new_state();
                for (int64_t t = 0; t < T; t += chunk) {
                    const int64_t n = std::min(chunk, T - t);
                    m.forward(std::span<const int32_t>(ids).subspan(size_t(t), size_t(n)), *st, LogitRows::All,
                              out.slice_rows(t, t + n));
                }
                return out;
            };
            const Tensor want = run(*cpu_m, T);
            CHECK(rel_diff(run(*gpu_m, T), want) < 1e-4f);  // one prefill
            CHECK(rel_diff(run(*gpu_m, 1), want) < 1e-4f);  // decode steps through the GPU cache
            CHECK(rel_diff(run(*gpu_m, 5), want) < 1e-4f);  // chunks on top of cached keys
        }
        CHECK_THROWS_WITH_AS(load_language_model(stac::test::fixtures() / "llama" / "tiny-gqa-tied-f32", Placement{kGpu, DType::F16}),
                             doctest::Contains("f32 weights"), Error);
    }

    TEST_CASE("gpu: top_k matches the CPU, ties and NaN included") {
        STAC_REQUIRE_GPU();
        Tensor l = rnd({3, 50257}, 30);
        for (int j = 0; j < 50257; j += 97) l.data<float>()[j] = 2.5f;  // many ties
        l.data<float>()[50257 + 5] = NAN;
        for (int k : {1, 5, 40, 64}) {
            Tensor v = Tensor::empty({3, k}, DType::F32), i = Tensor::empty({3, k}, DType::I32);
            Tensor vg = Tensor::empty({3, k}, DType::F32, kGpu), ig = Tensor::empty({3, k}, DType::I32, kGpu);
            kernels::top_k(v, i, l), kernels::top_k(vg, ig, gpu(l));
            CHECK(same_bytes(ig, i));
            CHECK(same_bytes(vg, v));
        }
    }

    TEST_CASE("gpu: spiking neurons are bit-identical to the CPU, and counts = the QANN quantizer (SNN = QANN)") {
        STAC_REQUIRE_GPU();
        const int64_t T = 7, N = 301;
        const Tensor x = rnd({T, N}, 40, 3.0f);
        Tensor inv_pc = rnd({N}, 41, 0.3f);
        for (int64_t i = 0; i < N; ++i) inv_pc.data<float>()[i] = std::fabs(inv_pc.data<float>()[i]) + 0.5f;
        const Tensor inv_t = host_f32({1.7f}, {1});
        for (const Tensor* inv : {&inv_t, static_cast<const Tensor*>(&inv_pc)})
            for (auto [lo, hi] : std::vector<std::pair<int, int>>{{0, 1}, {0, 8}, {-8, 8}, {-127, 127}})
                for (int S : {hi, hi + 3, 2 * hi + 1}) {
                    CAPTURE(lo); CAPTURE(hi); CAPTURE(S);
                    const kernels::SiteBounds bc{*inv, lo, hi};
                    const Tensor ig = gpu(*inv);
                    const kernels::SiteBounds bg{ig, lo, hi};
                    Tensor qc = Tensor::empty({T, N}, DType::I8), qg = Tensor::empty({T, N}, DType::I8, kGpu);
                    kernels::quantize(qc, x, bc), kernels::quantize(qg, gpu(x), bg);
                    CHECK(same_bytes(qg, qc));
                    Tensor cc = Tensor::empty({T, N}, DType::I8), cg = Tensor::empty({T, N}, DType::I8, kGpu);
                    Tensor sc = Tensor::empty({S, T, N}, DType::I8), sg = Tensor::empty({S, T, N}, DType::I8, kGpu);
                    const int64_t ec = kernels::neurons_layerwise(cc, sc, x, bc, S);
                    const int64_t eg = kernels::neurons_layerwise(cg, sg, gpu(x), bg, S);
                    CHECK(eg == ec);
                    CHECK(same_bytes(cg, cc));
                    CHECK(same_bytes(sg, sc));
                    CHECK(same_bytes(cg, qg));  // S >= L: the layer-wise SNN is the QANN
                    CHECK(kernels::neurons_layerwise(cg, Tensor(), gpu(x), bg, S) == ec);  // count path
                }
        // Streaming steps: double membranes, identical arithmetic.
        Tensor v = Tensor::empty({T, N}, DType::F64), n = Tensor::zeros({T, N}, DType::I32);
        for (int64_t i = 0; i < T * N; ++i) v.data<double>()[i] = 0.5;
        Tensor vg = gpu(v), ng = gpu(n), sp = Tensor::empty({T, N}, DType::I8), spg = Tensor::empty({T, N}, DType::I8, kGpu);
        const kernels::SiteBounds bc{inv_pc, -8, 8};
        const Tensor ig = gpu(inv_pc);
        const kernels::SiteBounds bg{ig, -8, 8};
        for (int s = 0; s < 12; ++s) {
            const Tensor inc = rnd({T, N}, 50 + uint64_t(s), 0.7f);
            CHECK(kernels::neurons_step(vg, ng, spg, gpu(inc), bg) == kernels::neurons_step(v, n, sp, inc, bc));
            CHECK(same_bytes(spg, sp));
        }
        CHECK(same_bytes(vg, v));
        CHECK(same_bytes(ng, n));
        Tensor nc = Tensor::empty({T, N}, DType::I8), ncg = Tensor::empty({T, N}, DType::I8, kGpu);
        kernels::narrow_counts(nc, n), kernels::narrow_counts(ncg, ng);
        CHECK(same_bytes(ncg, nc));
        Tensor big = Tensor::zeros({4}, DType::I32);
        big.data<int32_t>()[2] = 300;
        Tensor o4 = Tensor::empty({4}, DType::I8, kGpu);
        CHECK_THROWS_WITH_AS(kernels::narrow_counts(o4, gpu(big)), doctest::Contains("does not fit int8"), Error);
    }

    TEST_CASE("gpu: token scaling (row factors, scaled inputs, rescaled outputs) is bit-identical to the CPU") {
        STAC_REQUIRE_GPU();
        // 300 rows of 1000 (several loop trips per thread of a 256-thread block), one row of zeros,
        // one with an outlier; signed and unsigned sites, per-column and per-tensor thresholds.
        const int64_t T = 300, N = 1000;
        Tensor x = rnd({T, N}, 60, 2.0f);
        for (int64_t i = 0; i < N; ++i) x.data<float>()[5 * N + i] = 0.0f;
        x.data<float>()[7 * N + 999] = 4000.0f;
        Tensor inv_pc = rnd({N}, 61, 0.3f);
        for (int64_t i = 0; i < N; ++i) inv_pc.data<float>()[i] = std::fabs(inv_pc.data<float>()[i]) + 0.5f;
        const Tensor inv_t = host_f32({1.7f}, {1});
        for (const Tensor* inv : {&inv_t, static_cast<const Tensor*>(&inv_pc)})
            for (auto [lo, hi] : std::vector<std::pair<int, int>>{{0, 15}, {-64, 64}}) {
                CAPTURE(lo); CAPTURE(hi);
                const Tensor ig = gpu(*inv);
                Tensor rc = Tensor::empty({T}, DType::F32), rg = Tensor::empty({T}, DType::F32, kGpu);
                Tensor xc = Tensor::empty({T, N}, DType::F32), xg = Tensor::empty({T, N}, DType::F32, kGpu);
                kernels::token_scale(rc, xc, x, {*inv, lo, hi});
                kernels::token_scale(rg, xg, gpu(x), {ig, lo, hi});
                CHECK(same_bytes(rg, rc));
                CHECK(same_bytes(xg, xc));
                CHECK(rc.data<float>()[5] == 1.0f);
            }
        Tensor r = rnd({T}, 62, 3.0f), b = rnd({N}, 63, 1.0f), y = rnd({T, N}, 64, 5.0f);
        Tensor yc = y.clone(), yg = gpu(y);
        kernels::rescale_rows(yc, r, b), kernels::rescale_rows(yg, gpu(r), gpu(b));
        CHECK(same_bytes(yg, yc));
        kernels::rescale_rows(yc, r, Tensor()), kernels::rescale_rows(yg, gpu(r), Tensor());
        CHECK(same_bytes(yg, yc));
        const int64_t H = 4;  // [T, H D] rows with r[H, T]
        Tensor rh = rnd({H, T}, 65, 2.0f), a = rnd({T, N}, 66, 1.0f);
        Tensor ac = a.clone(), ag = gpu(a);
        kernels::rescale_head_rows(ac, rh), kernels::rescale_head_rows(ag, gpu(rh));
        CHECK(same_bytes(ag, ac));
    }

    TEST_CASE("gpu: spiking linear layers: spike path = count path = CPU, both GPU variants") {
        STAC_REQUIRE_GPU();
        const int64_t T = 5, K = 1500, N = 300;
        const int S = 9;
        Tensor w = Tensor::empty({K, N}, DType::F64);
        std::mt19937_64 rng(60);
        std::uniform_int_distribution<int> d(-3000, 3000);
        for (int64_t i = 0; i < K * N; ++i) w.data<double>()[i] = d(rng);
        const Tensor mult = rnd({N}, 61, 1e-3f), b = rnd({N}, 62);
        const Tensor spikes = rnd_i8({S, T, K}, 63, -1, 1, 0.6);
        // The counts the spikes sum to (may exceed a site's L here; the products are exact anyway).
        Tensor counts = Tensor::zeros({T, K}, DType::I8);
        for (int s = 0; s < S; ++s)
            for (int64_t i = 0; i < T * K; ++i) counts.data<int8_t>()[i] = int8_t(counts.data<int8_t>()[i] + spikes.data<int8_t>()[s * T * K + i]);
        Tensor oc = Tensor::empty({T, N}, DType::F32), os = Tensor::empty({T, N}, DType::F32);
        Tensor scratch = Tensor::empty({T * K + T * N}, DType::F64), acc = Tensor::empty({T * N}, DType::F64);
        kernels::linear_counts(oc, counts, w, mult, b, scratch);
        const int64_t ops = kernels::linear_spikes(os, spikes, w, mult, b, acc);
        CHECK(same_bytes(os, oc));
        const Tensor wg = gpu(w), mg = gpu(mult), bg = gpu(b);
        Tensor ocg = Tensor::empty({T, N}, DType::F32, kGpu), osg = Tensor::empty({T, N}, DType::F32, kGpu);
        kernels::linear_counts(ocg, gpu(counts), wg, mg, bg, Tensor());
        CHECK(same_bytes(ocg, oc));
        CHECK(kernels::linear_spikes(osg, gpu(spikes), wg, mg, bg, Tensor()) == ops);
        CHECK(same_bytes(osg, oc));
#ifdef STAC_WITH_CUDA
        Tensor ofg = Tensor::empty({T, N}, DType::F32, kGpu);
        const Tensor sg = gpu(spikes);
        CHECK(cuda::linear_spikes(0, ofg.raw_data<float>(), sg.raw_data<int8_t>(), S, T, K, wg.raw_data<double>(), N,
                                  mg.raw_data<float>(), bg.raw_data<float>(), cuda::SpikeLinear::Folded) == ops);
        CHECK(same_bytes(ofg, oc));
#endif
    }

    TEST_CASE("gpu: integer attention products (counts and spike trains) and dequantization are exact") {
        STAC_REQUIRE_GPU();
        const int64_t T = 6, P = 37, H = 3, D = 16, C = H * D, cap = 64, L = P + T;
        const int S = 5;
        Tensor kc = rnd_i8({H, cap, D}, 70, -8, 8), vc = rnd_i8({H, cap, D}, 71, -8, 8);
        const Tensor qs = rnd_i8({S, T, C}, 72, -1, 1, 0.5), ks = rnd_i8({S, T, C}, 73, -1, 1, 0.5),
                     vs = rnd_i8({S, T, C}, 74, -1, 1, 0.5), ps = rnd_i8({S, H, T, L}, 75, 0, 1, 0.7);
        auto sum_steps = [&](const Tensor& st, Shape s) {
            Tensor c = Tensor::zeros(s, DType::I8);
            const int64_t n = c.numel();
            for (int z = 0; z < S; ++z)
                for (int64_t i = 0; i < n; ++i) c.data<int8_t>()[i] = int8_t(c.data<int8_t>()[i] + st.data<int8_t>()[z * n + i]);
            return c;
        };
        const Tensor nq = sum_steps(qs, {T, C}), nk = sum_steps(ks, {T, C}), nv = sum_steps(vs, {T, C}), np = sum_steps(ps, {H, T, L});
        Tensor kcg = gpu(kc), vcg = gpu(vc);
        kernels::kv_append_counts(kc, vc, nk, nv, P), kernels::kv_append_counts(kcg, vcg, gpu(nk), gpu(nv), P);
        CHECK(same_bytes(kcg, kc));
        CHECK(same_bytes(vcg, vc));
        Tensor sc = Tensor::empty({H, T, L}, DType::I32), sg = Tensor::empty({H, T, L}, DType::I32, kGpu);
        kernels::scores_counts(sc, nq, kc, P), kernels::scores_counts(sg, gpu(nq), kcg, P);
        CHECK(same_bytes(sg, sc));
        Tensor run = Tensor::empty({H * T * L + 2 * T * C}, DType::I32), ss = Tensor::empty({H, T, L}, DType::I32);
        const int64_t ops_s = kernels::scores_spikes(ss, qs, ks, kc, P, run);
        CHECK(kernels::scores_spikes(sg, gpu(qs), gpu(ks), kcg, P, Tensor()) == ops_s);
        CHECK(same_bytes(sg, ss));
        CHECK(same_bytes(ss, sc));  // spike path = count path
        Tensor pc = Tensor::empty({T, C}, DType::I32), pg = Tensor::empty({T, C}, DType::I32, kGpu), pspk = Tensor::empty({T, C}, DType::I32);
        kernels::pv_counts(pc, np, vc, P), kernels::pv_counts(pg, gpu(np), vcg, P);
        CHECK(same_bytes(pg, pc));
        const int64_t ops_p = kernels::pv_spikes(pspk, ps, vs, vc, P, run);
        CHECK(kernels::pv_spikes(pg, gpu(ps), gpu(vs), vcg, P, Tensor()) == ops_p);
        CHECK(same_bytes(pg, pspk));
        CHECK(same_bytes(pspk, pc));
        const Tensor mult = rnd({H}, 76);
        Tensor f3 = Tensor::empty({H, T, L}, DType::F32), f3g = Tensor::empty({H, T, L}, DType::F32, kGpu);
        kernels::dequantize_heads(f3, sc, mult), kernels::dequantize_heads(f3g, gpu(sc), gpu(mult));
        CHECK(same_bytes(f3g, f3));
        Tensor f2 = Tensor::empty({T, C}, DType::F32), f2g = Tensor::empty({T, C}, DType::F32, kGpu);
        kernels::dequantize_heads(f2, pc, mult), kernels::dequantize_heads(f2g, gpu(pc), gpu(mult));
        CHECK(same_bytes(f2g, f2));
        // Grouped-query heads (H query heads over G < H cached heads) run on the CPU only.
        const Tensor kc1 = Tensor::zeros({1, cap, D}, DType::I8, kGpu);
        CHECK_THROWS_WITH_AS(kernels::scores_counts(sg, gpu(nq), kc1, P), doctest::Contains("runs on the CPU only"), Error);
        CHECK_THROWS_WITH_AS(kernels::pv_counts(pg, gpu(np), kc1, P), doctest::Contains("runs on the CPU only"), Error);
    }

    TEST_CASE("gpu: split_qkv splits equal and grouped-query widths as the CPU does") {
        STAC_REQUIRE_GPU();
        for (auto [Cq, Ckv] : std::vector<std::pair<int64_t, int64_t>>{{48, 48}, {64, 16}}) {
            const int64_t T = 5;
            const Tensor qkv = rnd({T, Cq + 2 * Ckv}, 77);
            Tensor q = Tensor::empty({T, Cq}, DType::F32), k = Tensor::empty({T, Ckv}, DType::F32), v = k.clone();
            Tensor qg = Tensor::empty({T, Cq}, DType::F32, kGpu), kg = Tensor::empty({T, Ckv}, DType::F32, kGpu),
                   vg = Tensor::empty({T, Ckv}, DType::F32, kGpu);
            kernels::split_qkv(q, k, v, qkv), kernels::split_qkv(qg, kg, vg, gpu(qkv));
            CHECK(same_bytes(qg, q));
            CHECK(same_bytes(kg, k));
            CHECK(same_bytes(vg, v));
        }
    }

    TEST_CASE("gpu: GPT-2 logits and greedy continuations match the CPU and transformers") {
        STAC_REQUIRE_GPU();
        for (const char* name : {"tiny-gelu-f32", "tiny-relu-f16", "tiny-untied-f32", "tiny-gelu-bf16-published"}) {
            CAPTURE(name);
            const auto dir = stac::test::gpt2_fixture(name);
            const auto cpu_model = Gpt2Model::load(dir);
            const auto gpu_model = cpu_model->to({kGpu, DType::F32});
            CHECK(gpu_model->device() == kGpu);
            const int64_t V = cpu_model->info().vocab_size;
            for (const auto& c : stac::test::load_reference(dir)) {
                const int64_t T = int64_t(c.ids.size());
                Tensor lc = Tensor::empty({T, V}, DType::F32), lg = Tensor::empty({T, V}, DType::F32);
                auto sc = cpu_model->new_state(), sg = gpu_model->new_state();
                cpu_model->forward(c.ids, *sc, LogitRows::All, lc);
                gpu_model->forward(c.ids, *sg, LogitRows::All, lg);
                CHECK(rel_diff(lg, lc) < 1e-4f);
                CHECK(stac::test::max_abs_diff(lg.data<float>(), c.logits.data(), c.logits.size()) < 1e-3f);
                // Top-1 identical at every position.
                for (int64_t t = 0; t < T; ++t) {
                    const float* a = lg.data<float>() + t * V;
                    const float* b = lc.data<float>() + t * V;
                    CHECK(std::max_element(a, a + V) - a == std::max_element(b, b + V) - b);
                }
                // Cached, one token at a time (the split-cache decode kernel) = one batched pass.
                auto si = gpu_model->new_state();
                Tensor one = Tensor::empty({1, V}, DType::F32);
                for (int64_t t = 0; t < T; ++t) {
                    gpu_model->forward(std::span(c.ids).subspan(size_t(t), 1), *si, LogitRows::Last, one);
                    CHECK(stac::test::max_abs_diff(one.data<float>(), lg.data<float>() + t * V, size_t(V)) < 1e-4f);
                }
                // Greedy continuation through a Session on the GPU = transformers' greedy.
                Session s(*gpu_model);
                s.feed(c.ids);
                std::vector<int32_t> out;
                for (size_t i = 0; i < c.greedy.size(); ++i) {
                    const auto l = s.logits();
                    const int32_t next = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
                    out.push_back(next);
                    const int32_t one_id[1] = {next};
                    if (i + 1 < c.greedy.size()) s.feed(one_id);
                }
                CHECK(out == c.greedy);
            }
        }
    }

    TEST_CASE("gpu: GPT-2 with f16 and bf16 weights stays close to the f32 CPU logits") {
        STAC_REQUIRE_GPU();
        const auto dir = stac::test::gpt2_fixture("tiny-gelu-f32");
        const auto cpu_model = Gpt2Model::load(dir);
        const int64_t V = cpu_model->info().vocab_size;
        for (DType dt : {DType::F16, DType::BF16}) {
            CAPTURE(int(dt));
            const auto m = cpu_model->to({kGpu, dt});
            CHECK(m->weights().layers.front().attn_w.dtype() == dt);
            for (const auto& c : stac::test::load_reference(dir)) {
                const int64_t T = int64_t(c.ids.size());
                Tensor lc = Tensor::empty({T, V}, DType::F32), lg = Tensor::empty({T, V}, DType::F32);
                auto sc = cpu_model->new_state(), sg = m->new_state();
                cpu_model->forward(c.ids, *sc, LogitRows::All, lc);
                m->forward(c.ids, *sg, LogitRows::All, lg);
                CHECK(rel_diff(lg, lc) < (dt == DType::F16 ? 1e-2f : 5e-2f));
            }
        }
        CHECK_THROWS_WITH_AS(cpu_model->to({Device::cpu(), DType::F16}), doctest::Contains("need --device cuda"), Error);
    }

    TEST_CASE("gpu: the decode step replayed from a CUDA graph equals the step run kernel by kernel") {
        STAC_REQUIRE_GPU();
        const auto host = Gpt2Model::load(stac::test::gpt2_fixture("tiny-gelu-f32"));
        const int64_t V = host->info().vocab_size;
        for (DType dt : {DType::F32, DType::BF16}) {
            CAPTURE(int(dt));
            auto m = host->to({kGpu, dt});
            auto sa = m->new_state(), sb = m->new_state();
            const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
            Tensor la = Tensor::empty({1, V}, DType::F32), lb = Tensor::empty({1, V}, DType::F32);
            m->forward(prompt, *sa, LogitRows::Last, la);
            m->forward(prompt, *sb, LogitRows::Last, lb);
            for (int i = 0; i < 12; ++i) {
                const int32_t tok[1] = {int32_t((i * 7 + 2) % V)};
                m->set_cuda_graphs(true);
                m->forward(tok, *sa, LogitRows::Last, la);
                m->set_cuda_graphs(false);
                m->forward(tok, *sb, LogitRows::Last, lb);
                CHECK(same_bytes(la, lb));
            }
            const auto& ga = dynamic_cast<const Gpt2State&>(*sa);
            CHECK(!ga.graph_failed);
            CHECK(ga.graph_replays == 11);  // every single-token step after the first (the warm-up)
            // A longer chunk grows the buffers: the graph is recorded again and still agrees.
            const std::vector<int32_t> chunk(40, 9);
            m->set_cuda_graphs(true);
            auto sc = m->new_state(), sd = m->new_state();
            m->forward(prompt, *sc, LogitRows::Last, la);
            const int32_t t1[1] = {8};
            m->forward(t1, *sc, LogitRows::Last, la);
            m->forward(t1, *sc, LogitRows::Last, la);
            m->forward(chunk, *sc, LogitRows::Last, la);
            m->forward(t1, *sc, LogitRows::Last, la);
            m->set_cuda_graphs(false);
            m->forward(prompt, *sd, LogitRows::Last, lb);
            m->forward(t1, *sd, LogitRows::Last, lb);
            m->forward(t1, *sd, LogitRows::Last, lb);
            m->forward(chunk, *sd, LogitRows::Last, lb);
            m->forward(t1, *sd, LogitRows::Last, lb);
            CHECK(same_bytes(la, lb));
            CHECK(dynamic_cast<const Gpt2State&>(*sc).graph_replays == 2);
        }
    }

    TEST_CASE("gpu: the decode loop allocates nothing once warm") {
        STAC_REQUIRE_GPU();
        const auto m = load_language_model(stac::test::gpt2_fixture("tiny-gelu-f32"), {kGpu, DType::F32});
        Session s(*m);
        const std::vector<int32_t> prompt = {1, 2, 3, 4};
        s.feed(prompt);
        const int32_t tok[1] = {5};
        s.feed(tok);
        s.feed(tok);  // warm: every temporary's size class is in the pool
        const uint64_t a0 = allocation_count();
        for (int i = 0; i < 10; ++i) s.feed(tok);
        CHECK(allocation_count() == a0);
    }

    TEST_CASE("gpu: spiking GPT-2 on the GPU: layer-wise SNN = QANN bit for bit, spike path = count path - streaming near the CPU") {
        STAC_REQUIRE_GPU();
        // Static thresholds, and token scaling (its row-max kernel, the rescaled linear outputs and
        // attention rows) on both models.
        for (const auto& [name, token_scale] : {std::pair{"tiny-gelu-f32", false}, std::pair{"tiny-relu-f16", false},
                                                std::pair{"tiny-gelu-f32", true}, std::pair{"tiny-relu-f16", true}}) {
            CAPTURE(name);
            CAPTURE(token_scale);
            const std::shared_ptr<const Gpt2Model> base = Gpt2Model::load(stac::test::gpt2_fixture(name));
            ConvertOptions o;
            o.simplified = true;
            o.token_scale = token_scale;
            const SnnSpec spec = simplified_spec(*base, o);
            const int64_t V = base->info().vocab_size, T = 20;
            std::vector<int32_t> ids;
            for (int64_t t = 0; t < T; ++t) ids.push_back(int32_t((t * 37 + 11) % V));
            // On `st` when given (to read its spike statistics), else on a fresh state.
            auto logits = [&](const SpikingModel& m, ModelState* st = nullptr) {
                Tensor l = Tensor::empty({T, V}, DType::F32);
                std::unique_ptr<ModelState> own;
                if (!st) own = m.new_state(), st = own.get();
                m.forward(ids, *st, LogitRows::All, l);
                return l;
            };
            auto make = [&](RunMode mode, SpikePath path) {
                return SpikingGpt2(base, spec, {mode, Schedule::LayerWise, path, spec.timesteps});
            };
            const SpikingGpt2 cpu_q = make(RunMode::Qann, SpikePath::Count), cpu_f = make(RunMode::Float, SpikePath::Count);
            const auto gpu_q = cpu_q.to(kGpu), gpu_f = cpu_f.to(kGpu);
            const auto gpu_s = make(RunMode::Snn, SpikePath::Spike).to(kGpu), gpu_c = make(RunMode::Snn, SpikePath::Count).to(kGpu);
            CHECK(gpu_s->device() == kGpu);
            const auto spike_st = gpu_s->new_state();
            const Tensor lq = logits(*gpu_q), ls = logits(*gpu_s, spike_st.get()), lc = logits(*gpu_c);
            CHECK(same_bytes(ls, lq));  // the layer-wise SNN is its QANN, on the GPU too
            CHECK(same_bytes(lc, ls));  // count path = spike path
            CHECK(gpu_s->stats(*spike_st).total_spikes() > 0);
            CHECK(rel_diff(logits(*gpu_f), logits(cpu_f)) < 1e-4f);
            // GPU and CPU QANN round the same counts except where a float difference crosses a
            // threshold: the greedy tokens must still agree almost everywhere.
            const Tensor lqc = logits(cpu_q);
            int same = 0;
            for (int64_t t = 0; t < T; ++t) {
                const float* a = lq.data<float>() + t * V;
                const float* b = lqc.data<float>() + t * V;
                same += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b;
            }
            CHECK(same >= T * 3 / 4);
        }
        // The streaming schedule (temporal-difference operators, one step of every layer at a
        // time) on the GPU against the CPU: not exact (float TD sums may cross a threshold
        // differently), so the greedy tokens must agree almost everywhere.
        const std::shared_ptr<const Gpt2Model> base = Gpt2Model::load(stac::test::gpt2_fixture("tiny-gelu-f32"));
        ConvertOptions o;
        o.simplified = true;
        const SpikingGpt2 cpu_st(base, simplified_spec(*base, o), {RunMode::Snn, Schedule::Streaming, SpikePath::Spike, 16});
        const auto gpu_st = cpu_st.to(kGpu);
        const int64_t V = base->info().vocab_size, T = 12;
        std::vector<int32_t> ids;
        for (int64_t t = 0; t < T; ++t) ids.push_back(int32_t((t * 53 + 5) % V));
        Tensor lc = Tensor::empty({T, V}, DType::F32), lg = Tensor::empty({T, V}, DType::F32);
        auto sc = cpu_st.new_state(), sg = gpu_st->new_state();
        cpu_st.forward(ids, *sc, LogitRows::All, lc);
        gpu_st->forward(ids, *sg, LogitRows::All, lg);
        int same = 0;
        for (int64_t t = 0; t < T; ++t) {
            const float* a = lg.data<float>() + t * V;
            const float* b = lc.data<float>() + t * V;
            same += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b;
        }
        CHECK(same >= T * 3 / 4);
        CHECK(rel_diff(lg, lc) < 0.2f);
        CHECK(gpu_st->stats(*sg).total_spikes() > 0);
    }
}

// Runs everywhere (not in the "gpu" suite): what asking for a GPU does where there is none.
TEST_CASE("device: without a GPU, every way of asking for one fails with a stac::Error naming the device") {
    const auto dir = stac::test::gpt2_fixture("tiny-gelu-f32");
    const auto host = Gpt2Model::load(dir);
    CHECK_THROWS_WITH_AS(host->to({Device::cpu(), DType::F16}), doctest::Contains("need --device cuda"), Error);
    CHECK_THROWS_WITH_AS(host->to({Device::cpu(), DType::I8}), doctest::Contains("not supported"), Error);
    CHECK_THROWS_WITH_AS(Device::parse("cuda:x"), doctest::Contains("unknown device 'cuda:x'"), Error);
    CHECK(Device::parse("cuda:3") == Device::cuda(3));
    if (cuda_device_count() > 0) return;  // the GPU cases cover the other side
    const char* why = cuda_compiled() ? "no CUDA GPU is available" : "no CUDA support";
    CHECK_THROWS_WITH_AS(Tensor::empty({4}, DType::F32, Device::cuda(0)), doctest::Contains(why), Error);
    CHECK_THROWS_WITH_AS(Tensor::zeros({4}, DType::F32).to(Device::cuda(1)), doctest::Contains("cuda:1"), Error);
    CHECK_THROWS_WITH_AS(host->to({Device::cuda(0), DType::F32}), doctest::Contains(why), Error);
    CHECK_THROWS_WITH_AS(load_language_model(dir, {Device::cuda(0), DType::BF16}), doctest::Contains("device cuda:0"), Error);
    CHECK_THROWS_WITH_AS(DeviceGraph::begin_capture(Device::cuda(0)), doctest::Contains(why), Error);
    CHECK_THROWS_WITH_AS(synchronize(Device::cuda(0)), doctest::Contains(why), Error);
    CHECK_NOTHROW(synchronize(Device::cpu()));
    ConvertOptions o;
    o.simplified = true;
    const std::shared_ptr<const Gpt2Model> base = Gpt2Model::load(dir);
    const SpikingGpt2 snn(base, simplified_spec(*base, o));
    CHECK_THROWS_WITH_AS(snn.to(Device::cuda(0)), doctest::Contains(why), Error);
}
