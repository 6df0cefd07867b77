// CPU kernels of the spiking network and its QANN: quantizer, fused multi-step neurons, exact
// integer-valued linear layers on counts or spikes, and integer attention products.
// Letters: T tokens, N neurons per token (columns), K inputs, S timesteps, H heads, D head dim,
// P cached tokens, L = P + T keys, cap cache capacity, C = H * D.
//
// A site's inverse scales `inv` have one entry (per tensor) or N (per column): `per_col` says which.
#pragma once

#include <cstdint>

namespace stac::cpu {

// QANN: counts[T, N] = quant_count(x * inv)
void quantize(int8_t* counts, const float* x, int64_t T, int64_t N, const float* inv, bool per_col, int n_min, int n_max);

// Token scaling (spiking_math.h): r[T] = token_factor(max over the row of token_magnitude), and
// xs[T, N] = x / r, what the site's neurons (or quantizer) then see.
void token_scale(float* r, float* xs, const float* x, int64_t T, int64_t N, const float* inv, bool per_col, int n_min,
                 int n_max);
// out[T, N] = out * r[t] + b[N] (b may be null), in place: a linear layer fed by a token-scaled site.
void rescale_rows(float* out, const float* r, const float* b, int64_t T, int64_t N);
// out[T, H * D] *= r[H, T] (the factor of head h's probability row for token t), in place.
void rescale_head_rows(float* out, const float* r, int64_t T, int64_t H, int64_t D);

// Layer-wise neurons: each neuron runs S steps on the constant current x * inv / S (membrane and
// counter in registers), writing counts[T, N] and, if `spikes` is not null, spikes[S, T, N].
// Returns the number of spike events (sum of |spike|).
int64_t neurons_layerwise(int8_t* counts, int8_t* spikes, const float* x, int64_t T, int64_t N, const float* inv,
                          bool per_col, int n_min, int n_max, int S);

// Streaming: one step for T*N neurons with state v (double membranes, start 0.5) and n (int32),
// driven by this step's input increment[T, N] scaled by inv; writes spikes[T, N]; returns the spike events.
int64_t neurons_step(double* v, int32_t* n, int8_t* spikes, const float* increment, int64_t T, int64_t N,
                     const float* inv, bool per_col, int n_min, int n_max);

// out[T, N] = float(acc) * mult[N] + b[N] (b may be null), acc = counts[T, K] · w[K, N] in double.
// w holds integers below 2^23 and |counts| <= 127, so every partial sum is an exact integer and
// the result does not depend on summation order. scratch: T*K + T*N doubles.
void linear_counts(float* out, const int8_t* counts, int64_t T, int64_t K, const double* w, int64_t N,
                   const float* mult, const float* b, double* scratch);

// The same result from spikes[S, T, K]: for every spike, add (or subtract) row k of w. acc: T*N doubles.
// Returns the accumulate operations performed (spikes x N).
int64_t linear_spikes(float* out, const int8_t* spikes, int S, int64_t T, int64_t K, const double* w, int64_t N,
                      const float* mult, const float* b, double* acc);

// out[T, N] = float(acc) * mult + b, shared by both linear paths so they round identically.
void finish_linear(float* out, const double* acc, int64_t T, int64_t N, const float* mult, const float* b);

// Grouped-query attention: H query heads share G = H / group key/value heads; query head h reads
// key/value head g = h / group of the caches kc, vc: [G, cap, D] and of the chunk's k, v: [T, G D]
// (GPT-2: group = 1).
//
// scores[H, T, L] = sum_d nq[t, h*D + d] * kc[g, j, d] for j <= P + t; other entries 0.
void scores_counts(int32_t* scores, const int8_t* nq, const int8_t* kc, int64_t T, int64_t P, int64_t H, int64_t D,
                   int64_t cap, int64_t group = 1);
// out[T, C] = sum_j np[h, t, j] * vc[g, j, d]  (np: [H, T, L], zero past P + t)
void pv_counts(int32_t* out, const int8_t* np, const int8_t* vc, int64_t T, int64_t P, int64_t H, int64_t D,
               int64_t cap, int64_t group = 1);

// The same products as temporal differences of spike trains: step t adds q_t K_t + Q_{t-1} k_t,
// where Q, K are running sums of the chunk's spikes (qs, ks: [S, T, C]) and cached keys j < P are
// the constants kc (ks: [S, T, G D]). Equal to scores_counts on the final counts. Returns the
// accumulate operations.
int64_t scores_spikes(int32_t* scores, const int8_t* qs, const int8_t* ks, const int8_t* kc, int S, int64_t T,
                      int64_t P, int64_t H, int64_t D, int64_t cap, int32_t* run /* T*C + T*G*D */, int64_t group = 1);
// ps: [S, H, T, L] spikes of the probabilities; vs: [S, T, G D] spikes of V; vc: cached V counts.
int64_t pv_spikes(int32_t* out, const int8_t* ps, const int8_t* vs, const int8_t* vc, int S, int64_t T, int64_t P,
                  int64_t H, int64_t D, int64_t cap, int32_t* run /* H*T*L + T*G*D */, int64_t group = 1);

// Copies the counts of T new tokens (nk, nv: [T, C]) into the caches kc, vc: [H, cap, D] at rows pos0...
void kv_append_counts(int8_t* kc, int8_t* vc, const int8_t* nk, const int8_t* nv, int64_t T, int64_t pos0, int64_t H,
                      int64_t D, int64_t cap);

// In place over x[H, T, L]: softmax of row (h, t) over j <= P + t; entries past it set to 0.
void softmax_causal(float* x, int64_t H, int64_t T, int64_t P);

}  // namespace stac::cpu
