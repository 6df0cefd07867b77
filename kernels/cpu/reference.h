// Plain reference CPU ops: a few obvious loops each, no tricks. Every faster path is tested against these.
// Letters: T tokens (rows), K input features, N output features, C channels, H heads, D head dim,
// P past tokens already in the cache, V vocabulary.
#pragma once

#include <cstdint>

#include "kernels/math.h"

namespace stac::ref {

// out[T, N] = x[T, K] · w[K, N] + b[N] (b may be null); accumulates in double.
void linear(float* out, const float* x, const float* w, const float* b, int64_t T, int64_t K, int64_t N);
// out[T, C] = (x - mean) / sqrt(var + eps) * g + b, row by row (biased variance, as PyTorch).
void layernorm(float* out, const float* x, const float* g, const float* b, int64_t T, int64_t C, float eps);
// x[n] = act(x[n])
void activation(float* x, int64_t n, Activation act);
// x[n] = softmax(x[n])
void softmax(float* x, int64_t n);
// Causal attention of T new queries at positions P..P+T-1 over the cache's first P+T keys;
// scores are q·k * scale (GPT-2: scale = 1/sqrt(D)).
// q: [T, H*D] rows of stride ldq; kc, vc: [H/group, cap, D]; out: [T, H*D] rows of stride ldo.
// Query head h reads key/value head h / group (grouped-query attention; group 1 for GPT-2).
void attention(float* out, int64_t ldo, const float* q, int64_t ldq, const float* kc, const float* vc, int64_t T,
               int64_t P, int64_t H, int64_t D, int64_t cap, float scale, int64_t group = 1);
// out[T, C] = g * x / sqrt(mean(x^2) + eps) (Llama's RMSNorm; the mean in double)
void rmsnorm(float* out, const float* x, const float* g, int64_t T, int64_t C, float eps);
// out[T, I] = silu(gu[:, :I]) * gu[:, I:] with silu in double
void silu_gate(float* out, const float* gu, int64_t T, int64_t I);
// Rotary embedding in place, straight from the definition: for each head of D at the start of a
// row (stride ldx) and each i < D/2, the pair (i, i + D/2) turns by (pos0 + t) * theta^(-2i/D),
// all in double (so it differs from the fast path only by f32 rounding of the angle).
void rope(float* x, int64_t ldx, int64_t T, int64_t nh, int64_t D, int64_t pos0, float theta);
// logits[T, V] = x[T, C] · e[V, C]^T
void matmul_nt(float* logits, const float* x, const float* e, int64_t T, int64_t C, int64_t V);

// ---- the site quantizer and the integrate-and-fire neuron by definition (DESIGN §5), in int64 and
// double, for the tests of spiking_math.h and the spiking kernels. Fixed point: one threshold =
// kFixedOne = 2^16, as kernels/spiking_math.h's kOne.
inline constexpr int64_t kFixedOne = int64_t(1) << 16;

// floor(a / b) for b > 0 (C++ division truncates toward zero).
int64_t floor_div(int64_t a, int64_t b);
// The quantizer by definition, in double (exact for every float u): clamp(floor(u + 1/2), lo, hi); NaN: 0.
int64_t quantize_count(float u, int64_t lo, int64_t hi);
// Step t of S of a constant current totalling U, by definition: floor((t+1)U/S) - floor(tU/S).
int64_t constant_current(int64_t U, int64_t t, int64_t S);
// u -> fixed point for currents that are not clamped (|u| well inside 2^14): the nearest multiple
// of 2^-16, ties to even (the default rounding mode of nearbyint).
int64_t to_fixed_nearest(float u);

// The neuron of DESIGN §5, line by line, in int64 without saturation: the membrane v starts at
// half a threshold; a step adds I; +1 when v >= 1 and the count is below hi (v -= 1), -1 when v < 0
// and the count is above lo (v += 1).
struct IfNeuron {
    int64_t v = kFixedOne / 2, n = 0;
    int64_t lo, hi;
    IfNeuron(int64_t lo_, int64_t hi_) : lo(lo_), hi(hi_) {}
    int step(int64_t I);  // the spike: +1, -1 or 0
    // Settled: the count is the quantizer of everything received, clamp(floor(sum + 1/2)). Since
    // v + n * kFixedOne = kFixedOne/2 + sum(I) at all times, that holds exactly when v is in
    // [0, kFixedOne), or the count is stuck at a bound with the membrane beyond it.
    bool settled() const { return (v >= 0 && v < kFixedOne) || (n == hi && v >= kFixedOne) || (n == lo && v < 0); }
};

}  // namespace stac::ref
