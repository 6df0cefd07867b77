// Fast CPU ops (Eigen GEMM and tight loops); same contracts as kernels/cpu/reference.h, checked against it.
// Letters: T tokens, K input features, N output features, C channels, H heads, D head dim, P past tokens, V vocab.
#pragma once

#include <cstdint>

#include "kernels/math.h"

namespace stac::cpu {

// out[T, N] = x[T, K] · w[K, N] + b[N]; w is Hugging Face Conv1D layout [in, out]; b may be null.
void linear(float* out, const float* x, const float* w, const float* b, int64_t T, int64_t K, int64_t N);
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
// out[T, C] = wte[ids[t]] + wpe[pos0 + t]
void embedding(float* out, const int32_t* ids, int64_t T, int64_t pos0, const float* wte, const float* wpe, int64_t C);
// Copies K and V of T new tokens (columns [C, 2C) and [2C, 3C) of qkv[T, 3C], C = H*D) into the
// caches kc, vc: [H, cap, D] at rows pos0..pos0+T-1.
void kv_append(float* kc, float* vc, const float* qkv, int64_t T, int64_t pos0, int64_t H, int64_t D, int64_t cap);
// Causal attention, see ref::attention; the heads run on the threads of core/parallel.h. scratch holds
// H * T * (P + T) floats.
void attention(float* out, int64_t ldo, const float* q, int64_t ldq, const float* kc, const float* vc, int64_t T,
               int64_t P, int64_t H, int64_t D, int64_t cap, float scale, float* scratch);
// Attention in explicit steps (the spiking model and calibration need the probabilities):
// scores[H, T, L] = q · k * scale for keys j <= P + t (others 0), L = P + T; q rows of stride ldq.
void attention_scores(float* scores, const float* q, int64_t ldq, const float* kc, int64_t T, int64_t P, int64_t H,
                      int64_t D, int64_t cap, float scale);
// out[T, H*D] (row stride ldo) = probs[H, T, L] · v
void attention_pv(float* out, int64_t ldo, const float* probs, const float* vc, int64_t T, int64_t P, int64_t H,
                  int64_t D, int64_t cap);
// logits[T, V] = x[T, C] · e[V, C]^T
void matmul_nt(float* logits, const float* x, const float* e, int64_t T, int64_t C, int64_t V);

}  // namespace stac::cpu
