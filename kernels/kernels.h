// kernels: one function per op on Tensors, checking shapes and dispatching on the device to
// kernels/cpu or kernels/cuda. Nothing above this layer knows the backend.
// Letters: T tokens, K input features, N output features, C channels (= H*D), H heads, D head dim,
// cap cache capacity, V vocabulary. All tensors are contiguous and f32, except that on a GPU the
// weight matrices (w, e, wte, wpe) may be F16 or BF16 (f32 accumulation). On a GPU the ops are
// queued on the device's stream; reading a result on the host (Tensor::to) waits for them.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "core/tensor.h"
#include "kernels/math.h"

namespace stac::kernels {

// out: [T, N] = x: [T, K] · w + b: [N] (b may be undefined). w is [K, N] (Hugging Face Conv1D
// layout; f32 on the CPU; f32, f16 or bf16 on a GPU) or, on the CPU, bf16 packed by
// pack_bf16_pairs: [ceil(K/2), N, 2].
void linear(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b);
// out = act(x · w + b): the activation fused into the bias pass
void linear_activation(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, Activation act);
// w: f32 [K, N] on the CPU -> bf16 [ceil(K/2), N, 2], pairs of consecutive inputs side by side (what
// the bf16 dot-product instruction reads), rounded to nearest even.
Tensor pack_bf16_pairs(const Tensor& w);
// out, x: [T, C]; g, b: [C]
void layernorm(const Tensor& out, const Tensor& x, const Tensor& g, const Tensor& b, float eps);
// x += y, then out = layernorm(x); out may be y (the residual add fused into the next norm)
void add_layernorm(const Tensor& x, const Tensor& y, const Tensor& out, const Tensor& g, const Tensor& b, float eps);
// x: any shape, in place
void activation(const Tensor& x, Activation act);
// x += y, same shape
void add(const Tensor& x, const Tensor& y);
// out: [T, C] = wte[ids] + wpe[pos0 .. pos0+T); ids are checked against wte's rows. wpe may be
// undefined (Llama: positions enter through the rotary embedding), then out = wte[ids].
void embedding(const Tensor& out, std::span<const int32_t> ids, int64_t pos0, const Tensor& wte, const Tensor& wpe);
// kc, vc: [G, cap, D] receive K, V of qkv: [T, (H + 2G) D] (rows q | k | v; GPT-2: H = G, [T, 3C];
// grouped-query attention: H query heads share G key/value heads) at rows pos0..pos0+T-1
void kv_append(const Tensor& kc, const Tensor& vc, const Tensor& qkv, int64_t pos0);
// out: [T, H D] = causal attention of the queries in qkv: [T, (H + 2G) D] (positions pos0..) over
// kc, vc: [G, cap, D] rows [0, pos0+T); query head h reads key/value head h / (H / G); scores
// scaled by `scale`; scratch: at least T * (pos0 + T) floats, and n times that to run n heads
// side by side (one per thread); unused and may be undefined on a GPU, whose kernels keep no
// [T, L] matrix (GPT-2 shapes only there: H = G)
void attention(const Tensor& out, const Tensor& qkv, const Tensor& kc, const Tensor& vc, int64_t pos0, float scale,
               const Tensor& scratch);
// out, x: [T, C]; g: [C]: out = g * x / sqrt(mean(x^2) + eps) (Llama's RMSNorm)
void rmsnorm(const Tensor& out, const Tensor& x, const Tensor& g, float eps);
// out: [T, I] = silu(gu[:, :I]) * gu[:, I:] for gu: [T, 2I] (Llama's gated MLP, gate and up fused)
void silu_gate(const Tensor& out, const Tensor& gu);
// Rotary position embedding in place on the first nh heads of D of each row of x: [T, W]
// (nh D <= W; Llama rotates q and k, the first H + G heads of qkv), row t at position pos0 + t.
void rope(const Tensor& x, int64_t nh, int64_t D, int64_t pos0, float theta);
// The decode step with its token and position in a tensor, step: I32 [2] = {id, pos}, on the
// operands' device, so a recorded CUDA graph replays for every position. The caller has checked
// the id and position (the GPU cannot throw); otherwise as embedding, kv_append and attention with T = 1.
void embedding_at(const Tensor& out, const Tensor& step, const Tensor& wte, const Tensor& wpe);
void kv_append_at(const Tensor& kc, const Tensor& vc, const Tensor& qkv, const Tensor& step);
void attention_at(const Tensor& out, const Tensor& qkv, const Tensor& kc, const Tensor& vc, const Tensor& step,
                  float scale, const Tensor& scratch);
// every element of x (F32, F64 or I32) = value
void fill(const Tensor& x, double value);
// out = a * in, same shape
void scaled_copy(const Tensor& out, const Tensor& in, float a);
// A running sum kept in double: sum: F64 += inc: F32, then value = float(sum) (F32), all one shape.
// The streaming schedule adds hundreds of small increments to each running input; in f32 the
// rounding would grow with the number of steps.
void accumulate(const Tensor& sum, const Tensor& inc, const Tensor& value);
// The step of a temporal-difference operator: emitted = y - prev, then prev = y (same shapes)
void td_emit(const Tensor& emitted, const Tensor& y, const Tensor& prev);
// q: [T, Cq], k, v: [T, Ckv] = the three column blocks of qkv: [T, Cq + 2 Ckv] (GPT-2: Cq = Ckv = C;
// grouped-query attention: Cq = H D, Ckv = G D)
void split_qkv(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& qkv);
// out: [T, V] = x: [T, C] · e: [V, C]^T (the tied LM head); e is f32 (bf16 too on the CPU and GPU, f16 on a GPU)
void matmul_nt(const Tensor& out, const Tensor& x, const Tensor& e);
// values: F32 [R, k], indices: I32 [R, k] = the k largest entries of each row of logits: F32 [R, V],
// largest first, ties to the lower index (NaN never chosen; rows with fewer than k numbers end in
// index -1, value NaN). 1 <= k <= 64.
void top_k(const Tensor& values, const Tensor& indices, const Tensor& logits);

}  // namespace stac::kernels
