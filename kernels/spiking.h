// kernels for the spiking network and its QANN, on Tensors (shape checks + device dispatch; the
// CPU versions are in kernels/cpu/spiking.h, the CUDA ones in kernels/cuda/spiking.cu, the
// per-element math both share in kernels/spiking_math.h). Scratch arguments (scratch, acc, run)
// serve the CPU; on a GPU they are not used and may be undefined (the kernels draw temporaries
// from the device pool). Functions returning a count wait for the GPU.
// Letters: T tokens, N neurons per token, K inputs, S timesteps, H heads, D head dim, C = H*D,
// P cached tokens, L = P + T keys, cap cache capacity.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace stac::kernels {

// A site's bounds and inverse thresholds: inv is F32 [1] (per tensor) or [N] (per column).
struct SiteBounds {
    const Tensor& inv;
    int n_min, n_max;
};

// counts: I8 [T, N] = the QANN quantizer of x: F32 [T, N]
void quantize(const Tensor& counts, const Tensor& x, const SiteBounds& b);
// Token scaling (per-token adaptive thresholds; docs/SNN.md): r: F32 [T] = the factor of each row
// (its largest value in thresholds over n_max, 1 for a row with nothing to count) and xs: F32 [T, N]
// = x / r, what the site's quantizer or neurons then see. Lets a token with outlier activations
// keep them instead of clipping, at a coarser grid for that token only.
void token_scale(const Tensor& r, const Tensor& xs, const Tensor& x, const SiteBounds& b);
// out: F32 [T, N] = out * r[t] + b, in place (b: F32 [N] or undefined): the output of a linear layer
// fed by a token-scaled site, computed without its bias.
void rescale_rows(const Tensor& out, const Tensor& r, const Tensor& b);
// out: F32 [T, H D] *= r[h, t], in place (r: F32 [H, T]): the attention output of head h for token t
// when its probability row was token-scaled.
void rescale_head_rows(const Tensor& out, const Tensor& r);
// Layer-wise neurons over S steps of constant current; spikes: I8 [S, T, N] or undefined (count
// path). Returns the spike events.
int64_t neurons_layerwise(const Tensor& counts, const Tensor& spikes, const Tensor& x, const SiteBounds& b, int S);
// One streaming step: v: F64 [T, N] membranes (start 0.5), n: I32 [T, N] counters; spikes: I8 [T, N];
// increment: F32 [T, N].
int64_t neurons_step(const Tensor& v, const Tensor& n, const Tensor& spikes, const Tensor& increment,
                     const SiteBounds& b);

// out: I8 = in: I32 (neuron counters, which stay within the site bounds), same number of elements
void narrow_counts(const Tensor& out, const Tensor& in);

// out: F32 [T, N] = float(counts · w) * mult + b; counts: I8 [T, K]; w: F64 [K, N] (integers < 2^23);
// mult: F32 [N]; b: F32 [N] or undefined; scratch: F64 with at least T*K + T*N elements.
void linear_counts(const Tensor& out, const Tensor& counts, const Tensor& w, const Tensor& mult, const Tensor& b,
                   const Tensor& scratch);
// The same from spikes: I8 [S, T, K]; acc: F64 with at least T*N elements. Returns accumulate ops.
int64_t linear_spikes(const Tensor& out, const Tensor& spikes, const Tensor& w, const Tensor& mult, const Tensor& b,
                      const Tensor& acc);

// Attention on counts and spikes supports grouped-query attention: H query heads (the leading dim
// of the scores / probabilities) share the G key/value heads of the caches (H a multiple of G);
// query head h reads key/value head h / (H / G). GPT-2 is the case G = H.
//
// kc, vc: I8 [G, cap, D] receive the counts nk, nv: I8 [T, G D] at rows pos0..pos0+T-1
void kv_append_counts(const Tensor& kc, const Tensor& vc, const Tensor& nk, const Tensor& nv, int64_t pos0);

// scores: I32 [H, T, L] = nq: I8 [T, H D] against kc: I8 [G, cap, D] rows <= P + t
void scores_counts(const Tensor& scores, const Tensor& nq, const Tensor& kc, int64_t P);
// out: I32 [T, H D] = np: I8 [H, T, L] · vc: I8 [G, cap, D]
void pv_counts(const Tensor& out, const Tensor& np, const Tensor& vc, int64_t P);
// Temporal-difference versions on spike trains (qs: I8 [S, T, H D]; ks, vs: I8 [S, T, G D]; ps: I8
// [S, H, T, L]); run: I32 scratch (T*H*D + T*G*D, resp. H*T*L + T*G*D). Equal to the count versions
// on the final counts.
int64_t scores_spikes(const Tensor& scores, const Tensor& qs, const Tensor& ks, const Tensor& kc, int64_t P,
                      const Tensor& run);
int64_t pv_spikes(const Tensor& out, const Tensor& ps, const Tensor& vs, const Tensor& vc, int64_t P,
                  const Tensor& run);

// out: F32 = float(in: I32) * mult[h], where h is the head of each element: for [H, T, L] the
// leading index, for [T, C] the column block of width D = C / H. mult: F32 [H].
void dequantize_heads(const Tensor& out, const Tensor& in, const Tensor& mult);

// x: F32 [H, T, L], in place: causal softmax of every row (keys past P + t set to 0)
void softmax_causal(const Tensor& x, int64_t P);
// scores: F32 [H, T, L] = q · k * scale, q the first H D columns of qkv: F32 [T, (H + 2G) D]
// (GPT-2: [T, 3C]); kc: F32 [G, cap, D]
void attention_scores(const Tensor& scores, const Tensor& qkv, const Tensor& kc, int64_t P, float scale);
// out: F32 [T, H D] = probs: F32 [H, T, L] · vc: F32 [G, cap, D]
void attention_pv(const Tensor& out, const Tensor& probs, const Tensor& vc, int64_t P);

}  // namespace stac::kernels
