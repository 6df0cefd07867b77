#include "kernels/kernels.h"

#include "kernels/check.h"
#include <algorithm>

#include "core/parallel.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"

namespace stac::kernels {

using detail::need_shape;
using detail::same_device;

namespace {
void need_f32(const Tensor& t, const char* op, const char* what) { detail::need(t, DType::F32, op, what); }
}  // namespace

void linear(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, std::optional<Activation> act) {
    need_f32(out, "linear", "out"), need_f32(x, "linear", "x");
    if (x.rank() != 2) fail("linear: x {} must be 2-D", x.describe());
    const int64_t T = x.dim(0), K = x.dim(1);
    const bool packed = w.dtype() == DType::BF16;
    if (!packed) need_f32(w, "linear", "w");
    if (w.rank() != (packed ? 3 : 2)) fail("linear: w {} must be f32 [K, N] or packed bf16 [K/2, N, 2]", w.describe());
    const int64_t N = w.dim(1);
    if (packed) need_shape(w, {(K + 1) / 2, N, 2}, "linear", "w");
    else need_shape(w, {K, N}, "linear", "w");
    need_shape(out, {T, N}, "linear", "out");
    if (b.defined()) need_f32(b, "linear", "b"), need_shape(b, {N}, "linear", "b");
    same_device("linear", {&out, &x, &w, &b});
    const float* bias = b.defined() ? b.data<float>() : nullptr;
    if (packed) cpu::linear_bf16(out.data<float>(), x.data<float>(), w.raw_data<uint16_t>(), bias, T, K, N, act);
    else cpu::linear_f32(out.data<float>(), x.data<float>(), w.data<float>(), bias, T, K, N, act);
}

Tensor pack_bf16_pairs(const Tensor& w) {
    need_f32(w, "pack_bf16_pairs", "w");
    if (w.rank() != 2) fail("pack_bf16_pairs: w {} must be 2-D [K, N]", w.describe());
    const int64_t K = w.dim(0), N = w.dim(1);
    Tensor p = Tensor::empty({(K + 1) / 2, N, 2}, DType::BF16, w.device());
    same_device("pack_bf16_pairs", {&w, &p});
    cpu::pack_bf16_pairs(p.raw_data<uint16_t>(), w.data<float>(), K, N);
    return p;
}

void add_layernorm(const Tensor& out, const Tensor& x, const Tensor& y, const Tensor& g, const Tensor& b, float eps) {
    need_f32(out, "add_layernorm", "out"), need_f32(x, "add_layernorm", "x"), need_f32(y, "add_layernorm", "y");
    need_f32(g, "add_layernorm", "weight"), need_f32(b, "add_layernorm", "bias");
    if (x.rank() != 2) fail("add_layernorm: x {} must be 2-D", x.describe());
    const int64_t T = x.dim(0), C = x.dim(1);
    need_shape(y, {T, C}, "add_layernorm", "y"), need_shape(out, {T, C}, "add_layernorm", "out");
    need_shape(g, {C}, "add_layernorm", "weight"), need_shape(b, {C}, "add_layernorm", "bias");
    same_device("add_layernorm", {&out, &x, &y, &g, &b});
    cpu::add_layernorm(out.data<float>(), x.data<float>(), y.data<float>(), g.data<float>(), b.data<float>(), T, C,
                       eps);
}

void layernorm(const Tensor& out, const Tensor& x, const Tensor& g, const Tensor& b, float eps) {
    need_f32(out, "layernorm", "out"), need_f32(x, "layernorm", "x");
    need_f32(g, "layernorm", "weight"), need_f32(b, "layernorm", "bias");
    if (x.rank() != 2) fail("layernorm: x {} must be 2-D", x.describe());
    const int64_t T = x.dim(0), C = x.dim(1);
    need_shape(out, {T, C}, "layernorm", "out");
    need_shape(g, {C}, "layernorm", "weight"), need_shape(b, {C}, "layernorm", "bias");
    same_device("layernorm", {&out, &x, &g, &b});
    cpu::layernorm(out.data<float>(), x.data<float>(), g.data<float>(), b.data<float>(), T, C, eps);
}

void activation(const Tensor& x, Activation act) {
    need_f32(x, "activation", "x");
    same_device("activation", {&x});
    cpu::activation(x.data<float>(), x.numel(), act);
}

void add(const Tensor& x, const Tensor& y) {
    need_f32(x, "add", "x"), need_f32(y, "add", "y");
    need_shape(y, x.shape(), "add", "y");
    same_device("add", {&x, &y});
    cpu::add_inplace(x.data<float>(), y.data<float>(), x.numel());
}

void embedding(const Tensor& out, std::span<const int32_t> ids, int64_t pos0, const Tensor& wte, const Tensor& wpe) {
    need_f32(out, "embedding", "out"), need_f32(wte, "embedding", "wte");
    if (wpe.defined()) need_f32(wpe, "embedding", "wpe");
    const int64_t T = static_cast<int64_t>(ids.size()), C = wte.dim(1);
    need_shape(out, {T, C}, "embedding", "out");
    if (wpe.defined() && wpe.dim(1) != C) fail("embedding: wpe {} and wte {} differ in width", wpe.describe(), wte.describe());
    for (int64_t t = 0; t < T; ++t)
        if (ids[size_t(t)] < 0 || ids[size_t(t)] >= wte.dim(0))
            fail("token id {} is outside the model's vocabulary [0, {})", ids[size_t(t)], wte.dim(0));
    if (wpe.defined() && (pos0 < 0 || pos0 + T > wpe.dim(0)))
        fail("positions {}..{} are outside the model's {} positions", pos0, pos0 + T - 1, wpe.dim(0));
    same_device("embedding", {&out, &wte, &wpe});
    cpu::embedding(out.data<float>(), ids.data(), T, pos0, wte.data<float>(), wpe.defined() ? wpe.data<float>() : nullptr, C);
}

namespace {
// The head counts of a fused qkv: [T, (H + 2G) D] over a cache of G key/value heads of D: returns H.
int64_t query_heads(const Tensor& qkv, int64_t G, int64_t D, const char* op) {
    const int64_t W = qkv.rank() == 2 ? qkv.dim(1) : -1;
    if (W < 0 || W % D != 0 || W / D < 3 * G || (W / D - 2 * G) % G != 0)
        fail("{}: qkv {} is not [T, (H + 2G) * {}] for G = {} key/value heads with H a multiple of G", op,
             qkv.describe(), D, G);
    return W / D - 2 * G;
}
}  // namespace

void kv_append(const Tensor& kc, const Tensor& vc, const Tensor& qkv, int64_t pos0) {
    need_f32(kc, "kv_append", "k cache"), need_f32(vc, "kv_append", "v cache"), need_f32(qkv, "kv_append", "qkv");
    if (kc.rank() != 3) fail("kv_append: k cache {} must be [H, cap, D]", kc.describe());
    const int64_t G = kc.dim(0), cap = kc.dim(1), D = kc.dim(2), T = qkv.dim(0);
    need_shape(vc, kc.shape(), "kv_append", "v cache");
    const int64_t H = query_heads(qkv, G, D, "kv_append");
    if (pos0 < 0 || pos0 + T > cap) fail("kv_append: rows {}..{} exceed the cache capacity {}", pos0, pos0 + T, cap);
    same_device("kv_append", {&kc, &vc, &qkv});
    cpu::kv_append(kc.data<float>(), vc.data<float>(), qkv.data<float>(), T, pos0, G, D, cap, H);
}

void attention(const Tensor& out, const Tensor& qkv, const Tensor& kc, const Tensor& vc, int64_t pos0, float scale,
               const Tensor& scratch) {
    need_f32(out, "attention", "out"), need_f32(qkv, "attention", "qkv");
    need_f32(kc, "attention", "k cache"), need_f32(vc, "attention", "v cache"), need_f32(scratch, "attention", "scratch");
    if (kc.rank() != 3) fail("attention: k cache {} must be [H, cap, D]", kc.describe());
    const int64_t G = kc.dim(0), cap = kc.dim(1), D = kc.dim(2), T = qkv.dim(0);
    need_shape(vc, kc.shape(), "attention", "v cache");
    const int64_t H = query_heads(qkv, G, D, "attention");
    need_shape(out, {T, H * D}, "attention", "out");
    if (pos0 < 0 || pos0 + T > cap) fail("attention: rows {}..{} exceed the cache capacity {}", pos0, pos0 + T, cap);
    const int64_t per_slice = T * (pos0 + T);
    if (scratch.numel() < per_slice)
        fail("attention: scratch of {} floats is smaller than T * (P + T) = {}", scratch.numel(), per_slice);
    same_device("attention", {&out, &qkv, &kc, &vc, &scratch});
    // As many heads side by side as there are threads and scratch slices for them.
    const int64_t slices = std::min<int64_t>({H, num_threads(), scratch.numel() / per_slice});
    cpu::attention(out.data<float>(), H * D, qkv.data<float>(), qkv.dim(1), kc.data<float>(), vc.data<float>(), T,
                   pos0, H, D, cap, scale, scratch.data<float>(), H / G, slices);
}

void rmsnorm(const Tensor& out, const Tensor& x, const Tensor& g, float eps) {
    need_f32(out, "rmsnorm", "out"), need_f32(x, "rmsnorm", "x"), need_f32(g, "rmsnorm", "weight");
    if (x.rank() != 2) fail("rmsnorm: x {} must be 2-D", x.describe());
    const int64_t T = x.dim(0), C = x.dim(1);
    need_shape(out, {T, C}, "rmsnorm", "out"), need_shape(g, {C}, "rmsnorm", "weight");
    same_device("rmsnorm", {&out, &x, &g});
    cpu::rmsnorm(out.data<float>(), x.data<float>(), g.data<float>(), T, C, eps);
}

void silu_gate(const Tensor& out, const Tensor& gu) {
    need_f32(out, "silu_gate", "out"), need_f32(gu, "silu_gate", "gate|up");
    if (gu.rank() != 2 || gu.dim(1) % 2 != 0) fail("silu_gate: gate|up {} must be [T, 2I]", gu.describe());
    const int64_t T = gu.dim(0), I = gu.dim(1) / 2;
    need_shape(out, {T, I}, "silu_gate", "out");
    same_device("silu_gate", {&out, &gu});
    cpu::silu_gate(out.data<float>(), gu.data<float>(), T, I);
}

void rope(const Tensor& x, int64_t nh, int64_t D, int64_t pos0, float theta) {
    need_f32(x, "rope", "x");
    if (x.rank() != 2) fail("rope: x {} must be 2-D", x.describe());
    if (nh < 1 || D < 2 || D % 2 != 0 || nh * D > x.dim(1))
        fail("rope: {} heads of {} (an even head size) do not fit rows of {}", nh, D, x.dim(1));
    if (pos0 < 0) fail("rope: negative position {}", pos0);
    if (!(theta > 0.0f)) fail("rope: theta = {} must be positive", theta);
    same_device("rope", {&x});
    cpu::rope(x.data<float>(), x.dim(1), x.dim(0), nh, D, pos0, theta);
}

void scaled_copy(const Tensor& out, const Tensor& in, float a) {
    need_f32(out, "scaled_copy", "out"), need_f32(in, "scaled_copy", "in");
    need_shape(out, in.shape(), "scaled_copy", "out");
    same_device("scaled_copy", {&out, &in});
    cpu::scaled_copy(out.data<float>(), in.data<float>(), in.numel(), a);
}

void accumulate(const Tensor& sum, const Tensor& inc, const Tensor& value) {
    detail::need(sum, DType::F64, "accumulate", "sum"), need_f32(inc, "accumulate", "increment"), need_f32(value, "accumulate", "value");
    need_shape(inc, sum.shape(), "accumulate", "increment"), need_shape(value, sum.shape(), "accumulate", "value");
    same_device("accumulate", {&sum, &inc, &value});
    cpu::accumulate(sum.data<double>(), inc.data<float>(), value.data<float>(), sum.numel());
}

void td_emit(const Tensor& emitted, const Tensor& y, const Tensor& prev) {
    need_f32(emitted, "td_emit", "emitted"), need_f32(y, "td_emit", "y"), need_f32(prev, "td_emit", "prev");
    need_shape(emitted, y.shape(), "td_emit", "emitted"), need_shape(prev, y.shape(), "td_emit", "prev");
    same_device("td_emit", {&emitted, &y, &prev});
    cpu::td_emit(emitted.data<float>(), y.data<float>(), prev.data<float>(), y.numel());
}

void matmul_nt(const Tensor& out, const Tensor& x, const Tensor& e) {
    need_f32(out, "matmul_nt", "out"), need_f32(x, "matmul_nt", "x");
    if (e.dtype() != DType::BF16) need_f32(e, "matmul_nt", "e");
    if (x.rank() != 2 || e.rank() != 2) fail("matmul_nt: x {} and e {} must be 2-D", x.describe(), e.describe());
    const int64_t T = x.dim(0), C = x.dim(1), V = e.dim(0);
    need_shape(e, {V, C}, "matmul_nt", "e");
    need_shape(out, {T, V}, "matmul_nt", "out");
    same_device("matmul_nt", {&out, &x, &e});
    if (e.dtype() == DType::BF16) cpu::matmul_nt_bf16(out.data<float>(), x.data<float>(), e.raw_data<uint16_t>(), T, C, V);
    else cpu::matmul_nt(out.data<float>(), x.data<float>(), e.data<float>(), T, C, V);
}

}  // namespace stac::kernels
