#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <Eigen/Core>

#include "core/parallel.h"
#include "kernels/cpu/gemm.h"

namespace stac::cpu {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::OuterStride<>;

void layernorm(float* out, const float* x, const float* g, const float* b, int64_t T, int64_t C, float eps) {
    for (int64_t t = 0; t < T; ++t) {
        const float* r = x + t * C;
        float* o = out + t * C;
        // Two passes in f32 (as PyTorch's CPU kernel): mean, then the centred variance.
        float mean = 0;
        for (int64_t c = 0; c < C; ++c) mean += r[c];
        mean /= float(C);
        float var = 0;
        for (int64_t c = 0; c < C; ++c) var += (r[c] - mean) * (r[c] - mean);
        var /= float(C);
        const float inv = 1.0f / std::sqrt(var + eps);
        for (int64_t c = 0; c < C; ++c) o[c] = (r[c] - mean) * inv * g[c] + b[c];
    }
}

void add_layernorm(float* out, float* x, const float* y, const float* g, const float* b, int64_t T, int64_t C,
                   float eps) {
    parallel_for(T, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            float* r = x + t * C;
            const float* d = y + t * C;
            for (int64_t c = 0; c < C; ++c) r[c] += d[c];
        }
        layernorm(out + t0 * C, x + t0 * C, g, b, t1 - t0, C, eps);
    });
}

void activation(float* x, int64_t n, Activation act) {
    switch (act) {
        case Activation::GeluTanh: for (int64_t i = 0; i < n; ++i) x[i] = gelu_tanh(x[i]); break;
        case Activation::GeluErf: for (int64_t i = 0; i < n; ++i) x[i] = gelu_erf(x[i]); break;
        case Activation::Relu: for (int64_t i = 0; i < n; ++i) x[i] = relu(x[i]); break;
        case Activation::Silu: for (int64_t i = 0; i < n; ++i) x[i] = silu(x[i]); break;
    }
}

void add_inplace(float* x, const float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void scaled_copy(float* out, const float* in, int64_t n, float a) {
    for (int64_t i = 0; i < n; ++i) out[i] = a * in[i];
}

void accumulate(double* sum, const float* inc, float* value, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        sum[i] += double(inc[i]);
        value[i] = float(sum[i]);
    }
}

void td_emit(float* emitted, const float* y, float* prev, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        emitted[i] = y[i] - prev[i];
        prev[i] = y[i];
    }
}

void embedding(float* out, const int32_t* ids, int64_t T, int64_t pos0, const float* wte, const float* wpe, int64_t C) {
    for (int64_t t = 0; t < T; ++t) {
        const float* e = wte + int64_t(ids[t]) * C;
        float* o = out + t * C;
        if (!wpe) {
            std::memcpy(o, e, size_t(C) * sizeof(float));
            continue;
        }
        const float* p = wpe + (pos0 + t) * C;
        for (int64_t c = 0; c < C; ++c) o[c] = e[c] + p[c];
    }
}

void kv_append(float* kc, float* vc, const float* qkv, int64_t T, int64_t pos0, int64_t H, int64_t D, int64_t cap,
               int64_t Hq) {
    if (Hq < 0) Hq = H;
    const int64_t Cq = Hq * D, Ckv = H * D, ld = Cq + 2 * Ckv;  // qkv row: q [Cq] | k [Ckv] | v [Ckv]
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
            std::memcpy(kc + (h * cap + pos0 + t) * D, qkv + t * ld + Cq + h * D, size_t(D) * sizeof(float));
            std::memcpy(vc + (h * cap + pos0 + t) * D, qkv + t * ld + Cq + Ckv + h * D, size_t(D) * sizeof(float));
        }
}

void attention(float* out, int64_t ldo, const float* q, int64_t ldq, const float* kc, const float* vc, int64_t T,
               int64_t P, int64_t H, int64_t D, int64_t cap, float scale, float* scratch, int64_t group,
               int64_t slices) {
    const int64_t L = P + T;  // keys visible to the last query
    slices = std::clamp<int64_t>(slices, 1, H);
    // Queries in blocks of kBlock rows: block [t0, t1) sees keys [0, P + t1) only, so a prompt's
    // causal half of the score matrix is (mostly) never computed.
    constexpr int64_t kBlock = 64;
    // Slice i of the scratch serves heads [H i / slices, H (i + 1) / slices), one slice per thread.
    parallel_for(slices, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i)
            for (int64_t h = H * i / slices; h < H * (i + 1) / slices; ++h) {
                const int64_t g = h / group;
                float* sh = scratch + i * T * L;
                for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
                    const int64_t t1 = std::min(T, t0 + kBlock), Tb = t1 - t0, Lb = P + t1;
                    // Q: [Tb, D] (strided view of q), K, V: [Lb, D] (this head's key/value head), S: [Tb, Lb]
                    Eigen::Map<const RowMat, 0, Strided> Q(q + t0 * ldq + h * D, Tb, D, Strided(ldq));
                    Eigen::Map<const RowMat> K(kc + g * cap * D, Lb, D), V(vc + g * cap * D, Lb, D);
                    Eigen::Map<RowMat> S(sh, Tb, Lb);
                    S.noalias() = Q * K.transpose();
                    for (int64_t t = 0; t < Tb; ++t) {
                        float* s = sh + t * Lb;
                        const int64_t len = P + t0 + t + 1;
                        float m = -INFINITY;
                        for (int64_t j = 0; j < len; ++j) {
                            s[j] *= scale;
                            m = std::max(m, s[j]);
                        }
                        float sum = 0;
                        for (int64_t j = 0; j < len; ++j) {
                            s[j] = std::exp(s[j] - m);
                            sum += s[j];
                        }
                        const float inv = 1.0f / sum;
                        for (int64_t j = 0; j < len; ++j) s[j] *= inv;
                        for (int64_t j = len; j < Lb; ++j) s[j] = 0.0f;  // future positions (causal mask)
                    }
                    Eigen::Map<RowMat, 0, Strided> O(out + t0 * ldo + h * D, Tb, D, Strided(ldo));
                    O.noalias() = S * V;
                }
            }
    });
}

void rmsnorm(float* out, const float* x, const float* g, int64_t T, int64_t C, float eps) {
    for (int64_t t = 0; t < T; ++t) {
        const float* r = x + t * C;
        float* o = out + t * C;
        // f32 sum of squares, as PyTorch's CPU mean of x.pow(2)
        float ss = 0;
        for (int64_t c = 0; c < C; ++c) ss += r[c] * r[c];
        const float inv = 1.0f / std::sqrt(ss / float(C) + eps);
        for (int64_t c = 0; c < C; ++c) o[c] = g[c] * (r[c] * inv);
    }
}

void silu_gate(float* out, const float* gu, int64_t T, int64_t I) {
    for (int64_t t = 0; t < T; ++t) {
        const float* gate = gu + t * 2 * I;
        const float* up = gate + I;
        float* o = out + t * I;
        for (int64_t i = 0; i < I; ++i) o[i] = stac::silu_gate(gate[i], up[i]);
    }
}

void rope(float* x, int64_t ldx, int64_t T, int64_t nh, int64_t D, int64_t pos0, float theta) {
    const int64_t half = D / 2;
    for (int64_t t = 0; t < T; ++t) {
        float* r = x + t * ldx;
        for (int64_t i = 0; i < half; ++i) {
            const auto [c, s] = rope_cos_sin(pos0 + t, i, D, theta);
            for (int64_t h = 0; h < nh; ++h) rope_rotate(r[h * D + i], r[h * D + half + i], c, s);
        }
    }
}

void attention_scores(float* scores, const float* q, int64_t ldq, const float* kc, int64_t T, int64_t P, int64_t H,
                      int64_t D, int64_t cap, float scale, int64_t group) {
    const int64_t L = P + T;
    for (int64_t h = 0; h < H; ++h) {
        Eigen::Map<const RowMat, 0, Strided> Q(q + h * D, T, D, Strided(ldq));
        Eigen::Map<const RowMat> K(kc + (h / group) * cap * D, L, D);
        Eigen::Map<RowMat> S(scores + h * T * L, T, L);
        S.noalias() = (Q * K.transpose()) * scale;
        for (int64_t t = 0; t < T; ++t)
            for (int64_t j = P + t + 1; j < L; ++j) S(t, j) = 0.0f;
    }
}

void attention_pv(float* out, int64_t ldo, const float* probs, const float* vc, int64_t T, int64_t P, int64_t H,
                  int64_t D, int64_t cap, int64_t group) {
    const int64_t L = P + T;
    for (int64_t h = 0; h < H; ++h) {
        Eigen::Map<const RowMat> Pm(probs + h * T * L, T, L), V(vc + (h / group) * cap * D, L, D);
        Eigen::Map<RowMat, 0, Strided> O(out + h * D, T, D, Strided(ldo));
        O.noalias() = Pm * V;
    }
}

}  // namespace stac::cpu
