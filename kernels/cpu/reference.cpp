#include "kernels/cpu/reference.h"

#include <cmath>
#include <vector>

namespace stac::ref {

void linear(float* out, const float* x, const float* w, const float* b, int64_t T, int64_t K, int64_t N) {
    for (int64_t t = 0; t < T; ++t)
        for (int64_t n = 0; n < N; ++n) {
            double acc = b ? b[n] : 0.0;
            for (int64_t k = 0; k < K; ++k) acc += double(x[t * K + k]) * double(w[k * N + n]);
            out[t * N + n] = float(acc);
        }
}

void layernorm(float* out, const float* x, const float* g, const float* b, int64_t T, int64_t C, float eps) {
    for (int64_t t = 0; t < T; ++t) {
        const float* r = x + t * C;
        double mean = 0, var = 0;
        for (int64_t c = 0; c < C; ++c) mean += r[c];
        mean /= double(C);
        for (int64_t c = 0; c < C; ++c) var += (r[c] - mean) * (r[c] - mean);
        var /= double(C);
        const double inv = 1.0 / std::sqrt(var + double(eps));
        for (int64_t c = 0; c < C; ++c) out[t * C + c] = float((r[c] - mean) * inv * g[c] + b[c]);
    }
}

void activation(float* x, int64_t n, Activation act) {
    for (int64_t i = 0; i < n; ++i) x[i] = activate(act, x[i]);
}

void softmax(float* x, int64_t n) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, double(x[i]));
    for (int64_t i = 0; i < n; ++i) s += std::exp(double(x[i]) - m);
    for (int64_t i = 0; i < n; ++i) x[i] = float(std::exp(double(x[i]) - m) / s);
}

void attention(float* out, int64_t ldo, const float* q, int64_t ldq, const float* kc, const float* vc, int64_t T,
               int64_t P, int64_t H, int64_t D, int64_t cap, float scale, int64_t group) {
    std::vector<float> p(static_cast<size_t>(P + T));
    for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; ++t) {
            const int64_t g = h / group;  // key/value head
            const int64_t len = P + t + 1;  // causal: keys at positions <= P + t
            const float* qr = q + t * ldq + h * D;
            for (int64_t j = 0; j < len; ++j) {
                const float* kr = kc + (g * cap + j) * D;
                double dot = 0;
                for (int64_t d = 0; d < D; ++d) dot += double(qr[d]) * double(kr[d]);
                p[size_t(j)] = float(dot * double(scale));
            }
            softmax(p.data(), len);
            for (int64_t d = 0; d < D; ++d) {
                double acc = 0;
                for (int64_t j = 0; j < len; ++j) acc += double(p[size_t(j)]) * double(vc[(g * cap + j) * D + d]);
                out[t * ldo + h * D + d] = float(acc);
            }
        }
}

void rmsnorm(float* out, const float* x, const float* g, int64_t T, int64_t C, float eps) {
    for (int64_t t = 0; t < T; ++t) {
        double ss = 0;
        for (int64_t c = 0; c < C; ++c) ss += double(x[t * C + c]) * double(x[t * C + c]);
        const double inv = 1.0 / std::sqrt(ss / double(C) + double(eps));
        for (int64_t c = 0; c < C; ++c) out[t * C + c] = float(double(g[c]) * double(x[t * C + c]) * inv);
    }
}

void silu_gate(float* out, const float* gu, int64_t T, int64_t I) {
    for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < I; ++i) {
            const double g = gu[t * 2 * I + i], u = gu[t * 2 * I + I + i];
            out[t * I + i] = float(g / (1.0 + std::exp(-g)) * u);
        }
}

void rope(float* x, int64_t ldx, int64_t T, int64_t nh, int64_t D, int64_t pos0, float theta) {
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < nh; ++h)
            for (int64_t i = 0; i < D / 2; ++i) {
                const double a = double(pos0 + t) * std::pow(double(theta), -2.0 * double(i) / double(D));
                float& x1 = x[t * ldx + h * D + i];
                float& x2 = x[t * ldx + h * D + D / 2 + i];
                const double a1 = double(x1) * std::cos(a) - double(x2) * std::sin(a);
                const double a2 = double(x2) * std::cos(a) + double(x1) * std::sin(a);
                x1 = float(a1), x2 = float(a2);
            }
}

void matmul_nt(float* logits, const float* x, const float* e, int64_t T, int64_t C, int64_t V) {
    for (int64_t t = 0; t < T; ++t)
        for (int64_t v = 0; v < V; ++v) {
            double acc = 0;
            for (int64_t c = 0; c < C; ++c) acc += double(x[t * C + c]) * double(e[v * C + c]);
            logits[t * V + v] = float(acc);
        }
}

int64_t floor_div(int64_t a, int64_t b) {
    const int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

int64_t quantize_count(float u, int64_t lo, int64_t hi) {
    const double d = u;
    if (std::isnan(d)) return 0;
    const double r = std::floor(d + 0.5);
    return r < double(lo) ? lo : (r > double(hi) ? hi : int64_t(r));
}

int64_t constant_current(int64_t U, int64_t t, int64_t S) { return floor_div(U * (t + 1), S) - floor_div(U * t, S); }

int64_t to_fixed_nearest(float u) { return int64_t(std::nearbyint(double(u) * double(kFixedOne))); }

int IfNeuron::step(int64_t I) {
    v += I;
    if (v >= kFixedOne && n < hi) {
        v -= kFixedOne, n += 1;
        return +1;
    }
    if (v < 0 && n > lo) {
        v += kFixedOne, n -= 1;
        return -1;
    }
    return 0;
}

}  // namespace stac::ref
