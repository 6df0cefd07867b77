// bench_kernels: the kernel lab. Times every CPU kernel a forward runs, after checking its result
// against the plain reference loops (kernels/cpu/reference.h, or an exact identity for the spiking
// kernels), and reports GFLOP/s or GB/s with the fraction of this machine's peak, measured here
// first: an FMA loop (compute peak) and a streaming read of 1 GiB (memory peak), per thread count.
// Prints one JSON object. Usage: bench_kernels [--threads LIST] [--repeats N] [--quick]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <immintrin.h>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "bench/bench_util.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/reference.h"
#include "kernels/cpu/spiking.h"

using nlohmann::json;
using namespace stac;

namespace {

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

float max_diff(const float* a, const float* b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

// ---------------------------------------------------------------- peaks

__attribute__((target("avx512f"))) double fma_loop_avx512(int64_t iters) {
    __m512 a[12];
    for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(float(i) * 1e-3f);
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int64_t it = 0; it < iters; ++it)
        for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
    __m512 s = a[0];
    for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
    return double(_mm512_reduce_add_ps(s));
}

__attribute__((target("avx2,fma"))) double fma_loop_avx2(int64_t iters) {
    __m256 a[12];
    for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(float(i) * 1e-3f);
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int64_t it = 0; it < iters; ++it)
        for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
    float out[8];
    __m256 s = a[0];
    for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
    _mm256_storeu_ps(out, s);
    return double(out[0]);
}

// GFLOP/s of independent FMA chains on every thread.
double peak_gflops(int threads, std::string& isa) {
    const bool avx512 = __builtin_cpu_supports("avx512f");
    isa = avx512 ? "avx512f fma" : "avx2 fma";
    const int64_t iters = 20'000'000;
    const double flops_per_thread = double(iters) * 12 * (avx512 ? 16 : 8) * 2;
    volatile double sink = 0;
    const auto t = bench::time_it(
        [&] {
            parallel_for(threads, 1, [&](int64_t b, int64_t e) {
                for (int64_t i = b; i < e; ++i) sink = sink + (avx512 ? fma_loop_avx512(iters) : fma_loop_avx2(iters));
            });
        },
        1, 3);
    return flops_per_thread * threads / t.median / 1e9;
}

// GB/s of summing a 1 GiB array (far beyond the caches), split across the threads.
double peak_read_gbs(const std::vector<float>& big) {
    const int64_t n = int64_t(big.size());
    volatile float sink = 0;
    const auto t = bench::time_it(
        [&] {
            parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
                float s[16] = {};
                for (int64_t i = b; i + 16 <= e; i += 16)
                    for (int j = 0; j < 16; ++j) s[j] += big[size_t(i + j)];
                float tot = 0;
                for (float x : s) tot += x;
                sink = sink + tot;
            });
        },
        1, 3);
    return double(n) * 4 / t.median / 1e9;
}

struct Peaks {
    double gflops = 0, read_gbs = 0;
};

json entry(const std::string& name, const std::string& shape, const bench::Timing& t, double flops, double bytes,
           const Peaks& pk, float check, float tol) {
    json j = {{"kernel", name},
              {"shape", shape},
              {"median_us", t.median * 1e6},
              {"min_us", t.min * 1e6},
              {"max_us", t.max * 1e6},
              {"repeats", t.repeats},
              {"check_max_abs_diff", check},
              {"check_tolerance", tol}};
    if (flops > 0) {
        j["gflops"] = flops / t.median / 1e9;
        j["fraction_of_peak_flops"] = flops / t.median / 1e9 / pk.gflops;
    }
    if (bytes > 0) {
        j["gbs"] = bytes / t.median / 1e9;
        j["fraction_of_peak_read"] = bytes / t.median / 1e9 / pk.read_gbs;
    }
    return j;
}

void require(bool ok, const std::string& what) {
    if (!ok) fail("bench_kernels: {} does not match the reference: not timed", what);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        std::string threads_arg = "1,2";
        int repeats = 9;
        bool quick = false;
        for (int i = 1; i < argc; ++i) {
            if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads_arg = argv[++i];
            else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::max(1, std::atoi(argv[++i]));
            else if (!std::strcmp(argv[i], "--quick")) quick = true;
            else {
                std::fprintf(stderr,
                             "usage: bench_kernels [--threads LIST] [--repeats N] [--quick]\n"
                             "  times each CPU kernel after checking it against the reference; JSON on stdout.\n"
                             "  --quick: smaller shapes, fewer repeats (a smoke run)\n");
                return 2;
            }
        }
        std::vector<int> threads_list;
        for (size_t b = 0; b < threads_arg.size();) {
            const size_t e = std::min(threads_arg.find(',', b), threads_arg.size());
            threads_list.push_back(std::max(1, std::atoi(threads_arg.substr(b, e - b).c_str())));
            b = e + 1;
        }
        if (quick) repeats = std::min(repeats, 3);
        const int64_t C = 768, I = 3072, V = quick ? 8192 : 50257;
        const std::vector<float> big(quick ? (size_t(1) << 26) : (size_t(1) << 28), 1.0f);

        json out = {{"bench", "bench_kernels"}, {"results", json::array()}, {"peaks", json::array()}};
        const auto x1 = randn(static_cast<size_t>(C), 1), xi = randn(static_cast<size_t>(I), 2);
        const auto w_fc = randn(static_cast<size_t>(C * I), 3, 0.02f), w_proj = randn(static_cast<size_t>(I * C), 4, 0.02f);
        const auto e_head = randn(static_cast<size_t>(V * C), 5, 0.02f);
        std::vector<uint16_t> p_fc(static_cast<size_t>(cpu::bf16_pairs_size(C, I))), e_bf(e_head.size());
        cpu::pack_bf16_pairs(p_fc.data(), w_fc.data(), C, I);
        for (size_t i = 0; i < e_head.size(); ++i) e_bf[i] = f32_to_bf16(e_head[i]);
        std::vector<float> w_fc_r(w_fc.size()), e_r(e_head.size());
        for (size_t i = 0; i < w_fc.size(); ++i) w_fc_r[i] = bf16_to_f32(f32_to_bf16(w_fc[i]));
        for (size_t i = 0; i < e_head.size(); ++i) e_r[i] = bf16_to_f32(e_bf[i]);

        for (int threads : threads_list) {
            set_num_threads(threads);
            Peaks pk;
            std::string isa;
            pk.gflops = peak_gflops(threads, isa);
            pk.read_gbs = peak_read_gbs(big);
            out["peaks"].push_back({{"threads", threads}, {"gflops", pk.gflops}, {"isa", isa}, {"read_gbs", pk.read_gbs}});
            auto add = [&](json j) {
                j["threads"] = threads;
                std::string rate;
                if (j.contains("gflops")) rate += fmt::format(" {:.1f} GFLOP/s", j["gflops"].get<double>());
                if (j.contains("gbs")) rate += fmt::format(" {:.1f} GB/s", j["gbs"].get<double>());
                if (j.contains("gsynops")) rate += fmt::format(" {:.2f} G synops/s", j["gsynops"].get<double>());
                if (j.contains("neuron_steps_per_s"))
                    rate += fmt::format(" {:.2f} G neuron-steps/s", j["neuron_steps_per_s"].get<double>() / 1e9);
                std::fprintf(stderr, "%-28s %-24s %2d thr %10.1f us %s\n", j["kernel"].get<std::string>().c_str(),
                             j["shape"].get<std::string>().c_str(), threads, j["median_us"].get<double>(), rate.c_str());
                out["results"].push_back(j);
            };

            // GEMV (decode): f32, Eigen's, bf16 (both kernels), against the reference loop.
            {
                std::vector<float> y(static_cast<size_t>(I)), ref(static_cast<size_t>(I));
                ref::linear(ref.data(), x1.data(), w_fc.data(), nullptr, 1, C, I);
                cpu::linear_f32(y.data(), x1.data(), w_fc.data(), nullptr, 1, C, I);
                float d = max_diff(y.data(), ref.data(), y.size());
                require(d < 1e-4f, "gemv f32");
                auto t = bench::time_it([&] { cpu::linear_f32(y.data(), x1.data(), w_fc.data(), nullptr, 1, C, I); }, 2, repeats);
                add(entry("gemv_f32 (stac)", "1x768 . 768x3072", t, 2.0 * C * I, 4.0 * C * I, pk, d, 1e-4f));
                using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
                Eigen::Map<const RowMat> X(x1.data(), 1, C), W(w_fc.data(), C, I);
                Eigen::Map<RowMat> Y(y.data(), 1, I);
                Y.noalias() = X * W;
                d = max_diff(y.data(), ref.data(), y.size());
                require(d < 1e-4f, "gemv f32 eigen");
                t = bench::time_it([&] { Y.noalias() = X * W; }, 2, repeats);
                add(entry("gemv_f32 (eigen)", "1x768 . 768x3072", t, 2.0 * C * I, 4.0 * C * I, pk, d, 1e-4f));
                ref::linear(ref.data(), x1.data(), w_fc_r.data(), nullptr, 1, C, I);
                for (bool portable : {false, true}) {
                    if (!portable && !cpu::cpu_has_avx512bf16()) continue;
                    cpu::set_bf16_portable(portable);
                    cpu::linear_bf16(y.data(), x1.data(), p_fc.data(), nullptr, 1, C, I);
                    d = max_diff(y.data(), ref.data(), y.size());
                    require(d < 1e-4f, "gemv bf16");
                    t = bench::time_it([&] { cpu::linear_bf16(y.data(), x1.data(), p_fc.data(), nullptr, 1, C, I); }, 2, repeats);
                    add(entry(portable ? "gemv_bf16 (portable)" : "gemv_bf16 (avx512bf16)", "1x768 . 768x3072", t,
                              2.0 * C * I, 2.0 * C * I, pk, d, 1e-4f));
                }
                cpu::set_bf16_portable(false);
            }
            // LM head (decode): f32 and bf16.
            {
                std::vector<float> y(static_cast<size_t>(V)), ref(static_cast<size_t>(V));
                ref::matmul_nt(ref.data(), x1.data(), e_head.data(), 1, C, V);
                cpu::matmul_nt_f32(y.data(), x1.data(), e_head.data(), 1, C, V);
                float d = max_diff(y.data(), ref.data(), y.size());
                require(d < 1e-4f, "head f32");
                auto t = bench::time_it([&] { cpu::matmul_nt_f32(y.data(), x1.data(), e_head.data(), 1, C, V); }, 2, repeats);
                const std::string sh = fmt::format("1x768 . {}x768^T", V);
                add(entry("lm_head_f32", sh, t, 2.0 * C * V, 4.0 * C * V, pk, d, 1e-4f));
                ref::matmul_nt(ref.data(), x1.data(), e_r.data(), 1, C, V);
                cpu::matmul_nt_bf16(y.data(), x1.data(), e_bf.data(), 1, C, V);
                d = max_diff(y.data(), ref.data(), y.size());
                require(d < 1e-4f, "head bf16");
                t = bench::time_it([&] { cpu::matmul_nt_bf16(y.data(), x1.data(), e_bf.data(), 1, C, V); }, 2, repeats);
                add(entry("lm_head_bf16", sh, t, 2.0 * C * V, 2.0 * C * V, pk, d, 1e-4f));
            }
            // GEMM (prompt chunks): f32 weights through Eigen, bf16 weights unpacked to f32 first.
            for (int64_t T : {int64_t(128), int64_t(512)}) {
                if (quick && T > 128) continue;
                const auto x = randn(static_cast<size_t>(T * C), 6);
                std::vector<float> y(static_cast<size_t>(T * I)), ref(static_cast<size_t>(8 * I));
                ref::linear(ref.data(), x.data(), w_fc.data(), nullptr, 8, C, I);  // the first 8 rows
                cpu::linear_f32(y.data(), x.data(), w_fc.data(), nullptr, T, C, I);
                float d = max_diff(y.data(), ref.data(), ref.size());
                require(d < 1e-4f, "gemm f32");
                auto t = bench::time_it([&] { cpu::linear_f32(y.data(), x.data(), w_fc.data(), nullptr, T, C, I); }, 1, repeats);
                const std::string sh = fmt::format("{}x768 . 768x3072", T);
                add(entry("gemm_f32", sh, t, 2.0 * T * C * I, 0, pk, d, 1e-4f));
                ref::linear(ref.data(), x.data(), w_fc_r.data(), nullptr, 8, C, I);
                cpu::linear_bf16(y.data(), x.data(), p_fc.data(), nullptr, T, C, I);
                d = max_diff(y.data(), ref.data(), ref.size());
                require(d < 1e-4f, "gemm bf16");
                t = bench::time_it([&] { cpu::linear_bf16(y.data(), x.data(), p_fc.data(), nullptr, T, C, I); }, 1, repeats);
                add(entry("gemm_bf16 (unpack + gemm)", sh, t, 2.0 * T * C * I, 0, pk, d, 1e-4f));
            }
            // LayerNorm and the fused residual + LayerNorm.
            {
                const int64_t T = 512;
                const auto x = randn(static_cast<size_t>(T * C), 7), g = randn(static_cast<size_t>(C), 8), b = randn(static_cast<size_t>(C), 9);
                std::vector<float> y(static_cast<size_t>(T * C)), ref(static_cast<size_t>(T * C));
                ref::layernorm(ref.data(), x.data(), g.data(), b.data(), T, C, 1e-5f);
                cpu::layernorm(y.data(), x.data(), g.data(), b.data(), T, C, 1e-5f);
                const float d = max_diff(y.data(), ref.data(), y.size());
                require(d < 1e-4f, "layernorm");
                const auto t = bench::time_it([&] { cpu::layernorm(y.data(), x.data(), g.data(), b.data(), T, C, 1e-5f); }, 2, repeats);
                add(entry("layernorm", "512x768", t, 0, 8.0 * T * C, pk, d, 1e-4f));
            }
            // Attention: prefill (T = L) and decode (T = 1) over a cache of P tokens; GPT-2's 12 heads of 64.
            for (int64_t L : {int64_t(128), int64_t(256), int64_t(512), int64_t(1024)}) {
                if (quick && L > 256) continue;
                const int64_t H = 12, D = 64, cap = L;
                for (bool prefill : {true, false}) {
                    const int64_t T = prefill ? L : 1, P = L - T;
                    const auto qkv = randn(static_cast<size_t>(T * 3 * C), 10);
                    auto kc = randn(static_cast<size_t>(H * cap * D), 11), vc = randn(static_cast<size_t>(H * cap * D), 12);
                    cpu::kv_append(kc.data(), vc.data(), qkv.data(), T, P, H, D, cap);
                    std::vector<float> o(static_cast<size_t>(T * C)), ref(static_cast<size_t>(T * C)), scratch(static_cast<size_t>(threads * T * L));
                    const float scale = 0.125f;
                    ref::attention(ref.data(), C, qkv.data(), 3 * C, kc.data(), vc.data(), T, P, H, D, cap, scale);
                    auto run = [&] {
                        cpu::attention(o.data(), C, qkv.data(), 3 * C, kc.data(), vc.data(), T, P, H, D, cap, scale,
                                       scratch.data(), 1, threads);
                    };
                    run();
                    const float d = max_diff(o.data(), ref.data(), o.size());
                    require(d < 1e-4f, "attention");
                    const auto t = bench::time_it(run, 1, repeats);
                    const double flops = 4.0 * H * D * double(T) * double(L);  // QK^T and PV, causal rows counted whole
                    add(entry(prefill ? "attention_prefill" : "attention_decode",
                              prefill ? fmt::format("T=L={}", L) : fmt::format("T=1, cache {}", P), t, flops, 0, pk, d, 1e-4f));
                }
            }
            // Spiking: the fused multi-step neuron update, and the spike-accumulate of a linear layer.
            {
                const int64_t T = quick ? 32 : 128, N = C, S = 16;
                const int L = 8;
                const auto x = randn(static_cast<size_t>(T * N), 13, 0.5f);
                std::vector<float> inv(static_cast<size_t>(N));
                for (auto& v : inv) v = float(L) / 1.5f;  // clip 1.5
                std::vector<int8_t> counts(static_cast<size_t>(T * N)), spikes(static_cast<size_t>(S * T * N)), q(static_cast<size_t>(T * N));
                cpu::quantize(q.data(), x.data(), T, N, inv.data(), true, -L, L);
                int64_t events = cpu::neurons_layerwise(counts.data(), spikes.data(), x.data(), T, N, inv.data(), true, -L, L, int(S));
                require(counts == q, "neurons (counts = QANN quantization)");
                const auto t = bench::time_it(
                    [&] { events = cpu::neurons_layerwise(counts.data(), spikes.data(), x.data(), T, N, inv.data(), true, -L, L, int(S)); },
                    1, repeats);
                json j = entry("neurons_layerwise", fmt::format("T={} N={} S={}", T, N, S), t, 0,
                               double(T * N) * (4 + 1 + double(S)), pk, 0, 0);
                j["neuron_steps_per_s"] = double(T * N * S) / t.median;
                j["firing_rate"] = double(events) / double(T * N * S);
                add(j);
                // Spike-accumulate into 3072 outputs with integer-valued double weights (the SNN's fc layer).
                const int64_t K = N, No = I;
                std::vector<double> w(static_cast<size_t>(K * No)), acc(static_cast<size_t>(T * No)), scratch(static_cast<size_t>(T * K + T * No));
                std::mt19937 rng(14);
                for (auto& v : w) v = double(int32_t(rng() % 20001) - 10000);
                std::vector<float> mult(static_cast<size_t>(No), 1e-4f), a(static_cast<size_t>(T * No)), b(static_cast<size_t>(T * No));
                cpu::linear_counts(a.data(), counts.data(), T, K, w.data(), No, mult.data(), nullptr, scratch.data());
                int64_t ops = cpu::linear_spikes(b.data(), spikes.data(), int(S), T, K, w.data(), No, mult.data(), nullptr, acc.data());
                const float d = max_diff(a.data(), b.data(), a.size());
                require(d == 0.0f, "spike-accumulate (spike path = count path)");
                const auto t2 = bench::time_it(
                    [&] { ops = cpu::linear_spikes(b.data(), spikes.data(), int(S), T, K, w.data(), No, mult.data(), nullptr, acc.data()); },
                    1, repeats);
                json j2 = entry("spike_accumulate", fmt::format("S={} T={} K={} N={}", S, T, K, No), t2, 0, 0, pk, d, 0);
                j2["synops_per_s"] = double(ops) / t2.median;
                j2["gsynops"] = double(ops) / t2.median / 1e9;
                add(j2);
                const auto t3 = bench::time_it(
                    [&] { cpu::linear_counts(a.data(), counts.data(), T, K, w.data(), No, mult.data(), nullptr, scratch.data()); }, 1, repeats);
                add(entry("linear_counts (double GEMM)", fmt::format("T={} K={} N={}", T, K, No), t3, 2.0 * T * K * No, 0, pk, 0, 0));
            }
        }
        std::puts(out.dump(2).c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_kernels: error: %s\n", e.what());
        return 1;
    }
}
