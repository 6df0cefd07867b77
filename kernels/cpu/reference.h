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

}  // namespace stac::ref
