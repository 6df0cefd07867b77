// Fast CPU ops (tight loops, Eigen for attention); same contracts as kernels/cpu/reference.h, checked
// against it. The matrix products (linear layers, the LM head) are in kernels/cpu/gemm.h.
// Letters: T tokens, K input features, N output features, C channels, H heads, D head dim, P past tokens, V vocab.
#pragma once

#include <cstdint>

#include "kernels/math.h"

namespace stac::cpu {

void layernorm(float* out, const float* x, const float* g, const float* b, int64_t T, int64_t C, float eps);
void activation(float* x, int64_t n, Activation act);
// x += y (the residual add), then out = layernorm(x), row by row in one pass.
void add_layernorm(float* out, float* x, const float* y, const float* g, const float* b, int64_t T, int64_t C,
                   float eps);
void add_inplace(float* x, const float* y, int64_t n);
void scaled_copy(float* out, const float* in, int64_t n, float a);
// sum += inc (double); value = float(sum)
void accumulate(double* sum, const float* inc, float* value, int64_t n);
// emitted = y - prev; prev = y
void td_emit(float* emitted, const float* y, float* prev, int64_t n);
// out[T, C] = wte[ids[t]] + wpe[pos0 + t] (wpe null: wte[ids[t]])
void embedding(float* out, const int32_t* ids, int64_t T, int64_t pos0, const float* wte, const float* wpe, int64_t C);
// Copies K and V of T new tokens into the caches kc, vc: [H, cap, D] at rows pos0..pos0+T-1. The
// rows of qkv are q | k | v with Hq query heads and H key/value heads: [T, (Hq + 2H) D]; Hq = -1
// means Hq = H (GPT-2: columns [C, 2C) and [2C, 3C) of [T, 3C]). Grouped-query attention has Hq > H.
void kv_append(float* kc, float* vc, const float* qkv, int64_t T, int64_t pos0, int64_t H, int64_t D, int64_t cap,
               int64_t Hq = -1);
// Causal attention, see ref::attention (group: query heads per key/value head). scratch holds
// slices * T * (P + T) floats; the heads run on up to `slices` threads (core/parallel.h).
void attention(float* out, int64_t ldo, const float* q, int64_t ldq, const float* kc, const float* vc, int64_t T,
               int64_t P, int64_t H, int64_t D, int64_t cap, float scale, float* scratch, int64_t group = 1,
               int64_t slices = 1);
// out[T, C] = x / sqrt(mean(x^2) + eps) * g, row by row (Llama's RMSNorm)
void rmsnorm(float* out, const float* x, const float* g, int64_t T, int64_t C, float eps);
// out[T, I] = silu(gu[:, :I]) * gu[:, I:] for gu: [T, 2I] (the fused gate | up projection)
void silu_gate(float* out, const float* gu, int64_t T, int64_t I);
// Rotary embedding in place on nh heads of D at the start of each row of x (row stride ldx), row t
// at position pos0 + t (see rope_rotate in kernels/math.h).
void rope(float* x, int64_t ldx, int64_t T, int64_t nh, int64_t D, int64_t pos0, float theta);
// Attention in explicit steps (the spiking model and calibration need the probabilities):
// scores[H, T, L] = q · k * scale for keys j <= P + t (others 0), L = P + T; q rows of stride ldq;
// query head h reads key/value head h / group of kc, vc: [H / group, cap, D].
void attention_scores(float* scores, const float* q, int64_t ldq, const float* kc, int64_t T, int64_t P, int64_t H,
                      int64_t D, int64_t cap, float scale, int64_t group = 1);
// out[T, H*D] (row stride ldo) = probs[H, T, L] · v
void attention_pv(float* out, int64_t ldo, const float* probs, const float* vc, int64_t T, int64_t P, int64_t H,
                  int64_t D, int64_t cap, int64_t group = 1);

}  // namespace stac::cpu
