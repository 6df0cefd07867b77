#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <immintrin.h>

#include <Eigen/Core>

#include "core/dtype.h"
#include "core/parallel.h"

namespace stac::cpu {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Columns per parallel block: a multiple of 16 (one AVX-512 register of f32).
constexpr int64_t kColGrain = 64;

void apply_act(float* y, int64_t n, Activation act) {
    switch (act) {
        case Activation::GeluTanh: for (int64_t i = 0; i < n; ++i) y[i] = gelu_tanh(y[i]); break;
        case Activation::GeluErf: for (int64_t i = 0; i < n; ++i) y[i] = gelu_erf(y[i]); break;
        case Activation::Relu: for (int64_t i = 0; i < n; ++i) y[i] = relu(y[i]); break;
        case Activation::Silu: for (int64_t i = 0; i < n; ++i) y[i] = silu(y[i]); break;
    }
}

// Bias and activation on columns [n0, n1) of T rows of out (row stride N).
void epilogue(float* out, const float* b, int64_t T, int64_t N, int64_t n0, int64_t n1,
              std::optional<Activation> act) {
    for (int64_t t = 0; t < T; ++t) {
        float* o = out + t * N + n0;
        if (b)
            for (int64_t j = 0; j < n1 - n0; ++j) o[j] += b[n0 + j];
        if (act) apply_act(o, n1 - n0, *act);
    }
}

// out[t, n0:n1] = x[t, :] · w[:, n0:n1] for T <= kGemvMaxRows, streaming four weight rows at a time.
void gemv_f32_block(float* out, const float* x, const float* w, int64_t T, int64_t K, int64_t N, int64_t n0,
                    int64_t n1) {
    const int64_t nb = n1 - n0;
    for (int64_t t = 0; t < T; ++t) std::memset(out + t * N + n0, 0, size_t(nb) * sizeof(float));
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
        const float* w0 = w + k * N + n0;
        const float* w1 = w0 + N;
        const float* w2 = w1 + N;
        const float* w3 = w2 + N;
        for (int64_t t = 0; t < T; ++t) {
            const float a0 = x[t * K + k], a1 = x[t * K + k + 1], a2 = x[t * K + k + 2], a3 = x[t * K + k + 3];
            float* __restrict o = out + t * N + n0;
            for (int64_t j = 0; j < nb; ++j) o[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j];
        }
    }
    for (; k < K; ++k) {
        const float* w0 = w + k * N + n0;
        for (int64_t t = 0; t < T; ++t) {
            const float a0 = x[t * K + k];
            float* __restrict o = out + t * N + n0;
            for (int64_t j = 0; j < nb; ++j) o[j] += a0 * w0[j];
        }
    }
}

// ---------------------------------------------------------------- bf16

// x split for the bf16 products: x = hi + lo with hi = bf16(x), lo = bf16(x - hi); the pair
// (x[2i], x[2i+1]) packed in one 32-bit word, as the dot-product instruction reads it.
struct SplitX {
    std::vector<uint32_t> hi, lo;  // [T, Kp]
    void build(const float* x, int64_t T, int64_t K) {
        const int64_t Kp = (K + 1) / 2;
        hi.resize(size_t(T * Kp));
        lo.resize(size_t(T * Kp));
        for (int64_t t = 0; t < T; ++t)
            for (int64_t p = 0; p < Kp; ++p) {
                const float a = x[t * K + 2 * p], b = 2 * p + 1 < K ? x[t * K + 2 * p + 1] : 0.0f;
                const uint16_t ah = f32_to_bf16(a), bh = f32_to_bf16(b);
                const uint16_t al = f32_to_bf16(a - bf16_to_f32(ah)), bl = f32_to_bf16(b - bf16_to_f32(bh));
                hi[size_t(t * Kp + p)] = uint32_t(ah) | uint32_t(bh) << 16;
                lo[size_t(t * Kp + p)] = uint32_t(al) | uint32_t(bl) << 16;
            }
    }
};

void gemv_bf16_block_portable(float* out, const SplitX& xs, const uint16_t* wp, int64_t T, int64_t K, int64_t N,
                              int64_t n0, int64_t n1) {
    const int64_t Kp = (K + 1) / 2, nb = n1 - n0;
    for (int64_t t = 0; t < T; ++t) std::memset(out + t * N + n0, 0, size_t(nb) * sizeof(float));
    for (int64_t p = 0; p < Kp; ++p) {
        const uint16_t* wr = wp + (p * N + n0) * 2;
        for (int64_t t = 0; t < T; ++t) {
            const uint32_t h = xs.hi[size_t(t * Kp + p)], l = xs.lo[size_t(t * Kp + p)];
            const float a = bf16_to_f32(uint16_t(h)) + bf16_to_f32(uint16_t(l));
            const float b = bf16_to_f32(uint16_t(h >> 16)) + bf16_to_f32(uint16_t(l >> 16));
            float* __restrict o = out + t * N + n0;
            for (int64_t j = 0; j < nb; ++j) o[j] += a * bf16_to_f32(wr[2 * j]) + b * bf16_to_f32(wr[2 * j + 1]);
        }
    }
}

#define STAC_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

STAC_AVX512BF16 void gemv_bf16_block_avx512(float* out, const SplitX& xs, const uint16_t* wp, int64_t T, int64_t K,
                                            int64_t N, int64_t n0, int64_t n1) {
    const int64_t Kp = (K + 1) / 2, nb = n1 - n0;
    for (int64_t t = 0; t < T; ++t) std::memset(out + t * N + n0, 0, size_t(nb) * sizeof(float));
    constexpr int64_t G = 4;  // k-pairs per pass over the block's accumulators
    for (int64_t p0 = 0; p0 < Kp; p0 += G) {
        const int64_t g = std::min(G, Kp - p0);
        for (int64_t j = 0; j < nb; j += 16) {
            const int64_t cols = std::min<int64_t>(16, nb - j);
            const __mmask16 m = cols == 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
            const __mmask32 m2 = cols == 16 ? __mmask32(0xFFFFFFFF) : __mmask32((1ull << (2 * cols)) - 1);
            __m512bh wv[G];
            for (int64_t i = 0; i < g; ++i)
                wv[i] = (__m512bh)_mm512_maskz_loadu_epi16(m2, wp + ((p0 + i) * N + n0 + j) * 2);
            for (int64_t t = 0; t < T; ++t) {
                float* o = out + t * N + n0 + j;
                __m512 acc = _mm512_maskz_loadu_ps(m, o);
                const uint32_t* h = xs.hi.data() + t * Kp + p0;
                const uint32_t* l = xs.lo.data() + t * Kp + p0;
                for (int64_t i = 0; i < g; ++i) {
                    acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_set1_epi32(int(h[i])), wv[i]);
                    acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_set1_epi32(int(l[i])), wv[i]);
                }
                _mm512_mask_storeu_ps(o, m, acc);
            }
        }
    }
}

// One row of the bf16 head: dot products of e rows [v0, v1) with x (split as bf16 hi/lo vectors of length C).
STAC_AVX512BF16 void head_bf16_rows_avx512(float* out, const uint16_t* xh, const uint16_t* xl, const uint16_t* e,
                                           int64_t C, int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
        const uint16_t* er = e + v * C;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t c = 0; c < C; c += 32) {
            const int64_t n = std::min<int64_t>(32, C - c);
            const __mmask32 m = n == 32 ? __mmask32(0xFFFFFFFF) : __mmask32((1ull << n) - 1);
            const __m512bh w = (__m512bh)_mm512_maskz_loadu_epi16(m, er + c);
            acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(m, xh + c), w);
            acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(m, xl + c), w);
        }
        out[v] = _mm512_reduce_add_ps(acc);
    }
}

// Four rows of the f32 head at a time: x is read once per 16 columns for four dot products.
__attribute__((target("avx512f"))) void head_f32_rows_avx512(float* out, const float* x, const float* e, int64_t C,
                                                             int64_t v0, int64_t v1) {
    int64_t v = v0;
    for (; v + 4 <= v1; v += 4) {
        const float* r0 = e + v * C;
        const float* r1 = r0 + C;
        const float* r2 = r1 + C;
        const float* r3 = r2 + C;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t c = 0; c < C; c += 16) {
            const int64_t n = std::min<int64_t>(16, C - c);
            const __mmask16 m = n == 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + c);
            a0 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, r0 + c), a0);
            a1 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, r1 + c), a1);
            a2 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, r2 + c), a2);
            a3 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, r3 + c), a3);
        }
        out[v] = _mm512_reduce_add_ps(a0);
        out[v + 1] = _mm512_reduce_add_ps(a1);
        out[v + 2] = _mm512_reduce_add_ps(a2);
        out[v + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; v < v1; ++v) {
        const float* r = e + v * C;
        __m512 a = _mm512_setzero_ps();
        for (int64_t c = 0; c < C; c += 16) {
            const int64_t n = std::min<int64_t>(16, C - c);
            const __mmask16 m = n == 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + c), _mm512_maskz_loadu_ps(m, r + c), a);
        }
        out[v] = _mm512_reduce_add_ps(a);
    }
}

bool cpu_has_avx512f() {
    static const bool yes = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") != 0;
    }();
    return yes;
}

void head_bf16_rows_portable(float* out, const uint16_t* xh, const uint16_t* xl, const uint16_t* e, int64_t C,
                             int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
        const uint16_t* er = e + v * C;
        float acc = 0;
        for (int64_t c = 0; c < C; ++c) acc += (bf16_to_f32(xh[c]) + bf16_to_f32(xl[c])) * bf16_to_f32(er[c]);
        out[v] = acc;
    }
}

std::atomic<bool> g_force_portable{[] {
    const char* force = std::getenv("STAC_BF16_KERNEL");
    return force && std::string(force) == "portable";
}()};

bool use_avx512bf16() { return cpu_has_avx512bf16() && !g_force_portable.load(std::memory_order_relaxed); }

}  // namespace

bool cpu_has_avx512bf16() {
    static const bool yes = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
    }();
    return yes;
}

void set_bf16_portable(bool portable) { g_force_portable = portable; }

std::string bf16_kernel_name() { return use_avx512bf16() ? "avx512bf16" : "portable"; }

void linear_f32(float* out, const float* x, const float* w, const float* b, int64_t T, int64_t K, int64_t N,
                std::optional<Activation> act) {
    if (T <= kGemvMaxRows) {
        parallel_for(N, kColGrain, [&](int64_t n0, int64_t n1) {
            gemv_f32_block(out, x, w, T, K, N, n0, n1);
            epilogue(out, b, T, N, n0, n1, act);
        });
        return;
    }
    Eigen::Map<const RowMat> X(x, T, K), W(w, K, N);
    Eigen::Map<RowMat> O(out, T, N);
    O.noalias() = X * W;  // Eigen's GEMM runs on the threads set by set_num_threads
    if (b || act)
        parallel_for(T, 1, [&](int64_t t0, int64_t t1) { epilogue(out + t0 * N, b, t1 - t0, N, 0, N, act); });
}

int64_t bf16_pairs_size(int64_t K, int64_t N) { return (K + 1) / 2 * N * 2; }

void pack_bf16_pairs(uint16_t* wp, const float* w, int64_t K, int64_t N) {
    const int64_t Kp = (K + 1) / 2;
    parallel_for(Kp, 1, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p)
            for (int64_t n = 0; n < N; ++n) {
                wp[(p * N + n) * 2] = f32_to_bf16(w[2 * p * N + n]);
                wp[(p * N + n) * 2 + 1] = 2 * p + 1 < K ? f32_to_bf16(w[(2 * p + 1) * N + n]) : uint16_t(0);
            }
    });
}

void linear_bf16(float* out, const float* x, const uint16_t* wp, const float* b, int64_t T, int64_t K, int64_t N,
                 std::optional<Activation> act) {
    if (T <= kGemvMaxRows) {
        thread_local SplitX split;  // grown once: the decode loop does not allocate
        split.build(x, T, K);
        const SplitX& xs = split;  // the workers read the caller's copy (a thread_local named in a lambda would be theirs)
        const bool fast = use_avx512bf16();
        parallel_for(N, kColGrain, [&](int64_t n0, int64_t n1) {
            if (fast) gemv_bf16_block_avx512(out, xs, wp, T, K, N, n0, n1);
            else gemv_bf16_block_portable(out, xs, wp, T, K, N, n0, n1);
            epilogue(out, b, T, N, n0, n1, act);
        });
        return;
    }
    // A prompt chunk: unpack the weights to f32 once (kept for the next call) and use the GEMM.
    thread_local std::vector<float> wf;
    wf.resize(size_t(K * N));
    float* W = wf.data();
    parallel_for(K, 1, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k)
            for (int64_t n = 0; n < N; ++n) W[k * N + n] = bf16_to_f32(wp[((k / 2) * N + n) * 2 + k % 2]);
    });
    linear_f32(out, x, W, b, T, K, N, act);
}

void matmul_nt_f32(float* out, const float* x, const float* e, int64_t T, int64_t C, int64_t V) {
    if (T <= kGemvMaxRows && cpu_has_avx512f()) {  // decode: stream the head once per row of x
        for (int64_t t = 0; t < T; ++t)
            parallel_for(V, 256, [&](int64_t v0, int64_t v1) { head_f32_rows_avx512(out + t * V, x + t * C, e, C, v0, v1); });
        return;
    }
    parallel_for(V, 256, [&](int64_t v0, int64_t v1) {
        Eigen::Map<const RowMat> X(x, T, C), E(e + v0 * C, v1 - v0, C);
        Eigen::Map<RowMat, 0, Eigen::OuterStride<>> O(out + v0, T, v1 - v0, Eigen::OuterStride<>(V));
        O.noalias() = X * E.transpose();
    });
}

void matmul_nt_bf16(float* out, const float* x, const uint16_t* e, int64_t T, int64_t C, int64_t V) {
    thread_local std::vector<uint16_t> hi, lo;  // x split as hi + lo; grown once
    hi.resize(size_t(T * C));
    lo.resize(size_t(T * C));
    for (int64_t i = 0; i < T * C; ++i) {
        hi[size_t(i)] = f32_to_bf16(x[i]);
        lo[size_t(i)] = f32_to_bf16(x[i] - bf16_to_f32(hi[size_t(i)]));
    }
    const uint16_t* xh = hi.data();  // the caller's buffers, for the workers
    const uint16_t* xl = lo.data();
    const bool fast = use_avx512bf16();
    for (int64_t t = 0; t < T; ++t)
        parallel_for(V, 256, [&](int64_t v0, int64_t v1) {
            if (fast) head_bf16_rows_avx512(out + t * V, xh + t * C, xl + t * C, e, C, v0, v1);
            else head_bf16_rows_portable(out + t * V, xh + t * C, xl + t * C, e, C, v0, v1);
        });
}

}  // namespace stac::cpu
