#include "kernels/kernels.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/check.h"
#include <algorithm>

#include "core/parallel.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/ops.h"

namespace stac::kernels {

using detail::kCuda;
using detail::need_shape;
using detail::need_weight;
using detail::same_device;

namespace {
void need_f32(const Tensor& t, const char* op, const char* what) { detail::need(t, DType::F32, op, what); }
const float* fp(const Tensor& t) { return t.defined() ? t.raw_data<float>() : nullptr; }
float* mp(const Tensor& t) { return t.raw_data<float>(); }
}  // namespace

namespace {
void linear_impl(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, std::optional<Activation> act) {
    need_f32(out, "linear", "out"), need_f32(x, "linear", "x");
    if (x.rank() != 2) fail("linear: x {} must be 2-D", x.describe());
    const int64_t T = x.dim(0), K = x.dim(1);
    const bool packed = w.dtype() == DType::BF16 && w.rank() == 3;  // the CPU's bf16 pairs
    if (!packed) {
        need_weight(w, "linear", "w");
        if (w.rank() != 2) fail("linear: w {} must be [K, N] (or packed bf16 [K/2, N, 2] on the CPU)", w.describe());
    }
    const int64_t N = w.dim(1);
    if (packed) need_shape(w, {(K + 1) / 2, N, 2}, "linear", "w");
    else need_shape(w, {K, N}, "linear", "w");
    need_shape(out, {T, N}, "linear", "out");
    if (b.defined()) need_f32(b, "linear", "b"), need_shape(b, {N}, "linear", "b");
    const Device d = same_device("linear", {&out, &x, &w, &b});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            if (packed) fail("linear: packed bf16 pairs are the CPU's layout; on a GPU w is [K, N]");
            return cuda::linear(d.index, mp(out), fp(x), w.raw(), w.dtype(), fp(b), T, K, N, act.has_value(),
                                act.value_or(Activation::Relu));
        }
    const float* bias = b.defined() ? b.data<float>() : nullptr;
    if (packed) return cpu::linear_bf16(out.data<float>(), x.data<float>(), w.raw_data<uint16_t>(), bias, T, K, N, act);
    if (w.dtype() != DType::F32) fail("linear: the CPU takes f32 [K, N] or packed bf16 weights, not {}", w.describe());
    cpu::linear_f32(out.data<float>(), x.data<float>(), w.data<float>(), bias, T, K, N, act);
}
}  // namespace

Tensor pack_bf16_pairs(const Tensor& w) {
    need_f32(w, "pack_bf16_pairs", "w");
    if (w.rank() != 2) fail("pack_bf16_pairs: w {} must be 2-D [K, N]", w.describe());
    if (!w.device().is_cpu()) fail("pack_bf16_pairs: {} is on {}; the packed layout is the CPU's", w.describe(), w.device().str());
    const int64_t K = w.dim(0), N = w.dim(1);
    Tensor p = Tensor::empty({(K + 1) / 2, N, 2}, DType::BF16);
    cpu::pack_bf16_pairs(p.raw_data<uint16_t>(), w.data<float>(), K, N);
    return p;
}

void linear(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b) {
    linear_impl(out, x, w, b, std::nullopt);
}

void linear_activation(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, Activation act) {
    linear_impl(out, x, w, b, act);
}

namespace {
void check_norm(const Tensor& out, const Tensor& x, const Tensor& g, const Tensor& b, const char* op) {
    need_f32(out, op, "out"), need_f32(x, op, "x");
    need_f32(g, op, "weight"), need_f32(b, op, "bias");
    if (x.rank() != 2) fail("{}: x {} must be 2-D", op, x.describe());
    const int64_t T = x.dim(0), C = x.dim(1);
    need_shape(out, {T, C}, op, "out");
    need_shape(g, {C}, op, "weight"), need_shape(b, {C}, op, "bias");
}
}  // namespace

void layernorm(const Tensor& out, const Tensor& x, const Tensor& g, const Tensor& b, float eps) {
    check_norm(out, x, g, b, "layernorm");
    const int64_t T = x.dim(0), C = x.dim(1);
    const Device d = same_device("layernorm", {&out, &x, &g, &b});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::layernorm(d.index, mp(out), fp(x), fp(g), fp(b), T, C, eps);
    cpu::layernorm(out.data<float>(), x.data<float>(), g.data<float>(), b.data<float>(), T, C, eps);
}

void add_layernorm(const Tensor& x, const Tensor& y, const Tensor& out, const Tensor& g, const Tensor& b, float eps) {
    check_norm(out, x, g, b, "add_layernorm");
    need_f32(y, "add_layernorm", "y"), need_shape(y, x.shape(), "add_layernorm", "y");
    const int64_t T = x.dim(0), C = x.dim(1);
    const Device d = same_device("add_layernorm", {&x, &y, &out, &g, &b});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::add_layernorm(d.index, mp(x), fp(y), mp(out), fp(g), fp(b), T, C, eps);
    cpu::add_layernorm(out.data<float>(), x.data<float>(), y.data<float>(), g.data<float>(), b.data<float>(), T, C, eps);
}

void activation(const Tensor& x, Activation act) {
    need_f32(x, "activation", "x");
    const Device d = same_device("activation", {&x});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::activation(d.index, mp(x), x.numel(), act);
    cpu::activation(x.data<float>(), x.numel(), act);
}

void add(const Tensor& x, const Tensor& y) {
    need_f32(x, "add", "x"), need_f32(y, "add", "y");
    need_shape(y, x.shape(), "add", "y");
    const Device d = same_device("add", {&x, &y});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::add(d.index, mp(x), fp(y), x.numel());
    cpu::add_inplace(x.data<float>(), y.data<float>(), x.numel());
}

void embedding(const Tensor& out, std::span<const int32_t> ids, int64_t pos0, const Tensor& wte, const Tensor& wpe) {
    need_f32(out, "embedding", "out"), need_weight(wte, "embedding", "wte");
    if (wpe.defined()) {
        need_weight(wpe, "embedding", "wpe");
        if (wte.dtype() != wpe.dtype()) fail("embedding: wte {} and wpe {} differ in dtype", wte.describe(), wpe.describe());
    }
    const int64_t T = static_cast<int64_t>(ids.size()), C = wte.dim(1);
    need_shape(out, {T, C}, "embedding", "out");
    if (wpe.defined() && wpe.dim(1) != C) fail("embedding: wpe {} and wte {} differ in width", wpe.describe(), wte.describe());
    for (int64_t t = 0; t < T; ++t)
        if (ids[size_t(t)] < 0 || ids[size_t(t)] >= wte.dim(0))
            fail("token id {} is outside the model's vocabulary [0, {})", ids[size_t(t)], wte.dim(0));
    if (wpe.defined() && (pos0 < 0 || pos0 + T > wpe.dim(0)))
        fail("positions {}..{} are outside the model's {} positions", pos0, pos0 + T - 1, wpe.dim(0));
    const Device d = same_device("embedding", {&out, &wte, &wpe});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            return cuda::embedding(d.index, mp(out), ids.data(), T, pos0, wte.raw(), wpe.defined() ? wpe.raw() : nullptr,
                                   wte.dtype(), C);
        }
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
    const Device d = same_device("kv_append", {&kc, &vc, &qkv});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            return cuda::kv_append(d.index, mp(kc), mp(vc), fp(qkv), T, pos0, G, D, cap, H);
        }
    cpu::kv_append(kc.data<float>(), vc.data<float>(), qkv.data<float>(), T, pos0, G, D, cap, H);
}

void attention(const Tensor& out, const Tensor& qkv, const Tensor& kc, const Tensor& vc, int64_t pos0, float scale,
               const Tensor& scratch) {
    need_f32(out, "attention", "out"), need_f32(qkv, "attention", "qkv");
    need_f32(kc, "attention", "k cache"), need_f32(vc, "attention", "v cache");
    if (kc.rank() != 3) fail("attention: k cache {} must be [H, cap, D]", kc.describe());
    const int64_t G = kc.dim(0), cap = kc.dim(1), D = kc.dim(2), T = qkv.dim(0);
    need_shape(vc, kc.shape(), "attention", "v cache");
    const int64_t H = query_heads(qkv, G, D, "attention");
    need_shape(out, {T, H * D}, "attention", "out");
    if (pos0 < 0 || pos0 + T > cap) fail("attention: rows {}..{} exceed the cache capacity {}", pos0, pos0 + T, cap);
    const Device d = same_device("attention", {&out, &qkv, &kc, &vc, &scratch});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            if (D > cuda::kMaxHeadDim) fail("attention: head dimension {} exceeds the CUDA kernels' {}", D, cuda::kMaxHeadDim);
            return cuda::attention(d.index, mp(out), H * D, fp(qkv), qkv.dim(1), fp(kc), fp(vc), T, pos0, H, D, cap, scale,
                                   cuda::AttentionKernel::Auto, H / G);
        }
    need_f32(scratch, "attention", "scratch");
    const int64_t per_slice = T * (pos0 + T);
    if (scratch.numel() < per_slice)
        fail("attention: scratch of {} floats is smaller than T * (P + T) = {}", scratch.numel(), per_slice);
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
    const Device d = same_device("rmsnorm", {&out, &x, &g});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::rmsnorm(d.index, mp(out), fp(x), fp(g), T, C, eps);
    cpu::rmsnorm(out.data<float>(), x.data<float>(), g.data<float>(), T, C, eps);
}

void silu_gate(const Tensor& out, const Tensor& gu) {
    need_f32(out, "silu_gate", "out"), need_f32(gu, "silu_gate", "gate|up");
    if (gu.rank() != 2 || gu.dim(1) % 2 != 0) fail("silu_gate: gate|up {} must be [T, 2I]", gu.describe());
    const int64_t T = gu.dim(0), I = gu.dim(1) / 2;
    need_shape(out, {T, I}, "silu_gate", "out");
    const Device d = same_device("silu_gate", {&out, &gu});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::silu_gate(d.index, mp(out), fp(gu), T, I);
    cpu::silu_gate(out.data<float>(), gu.data<float>(), T, I);
}

void rope(const Tensor& x, int64_t nh, int64_t D, int64_t pos0, float theta) {
    need_f32(x, "rope", "x");
    if (x.rank() != 2) fail("rope: x {} must be 2-D", x.describe());
    if (nh < 1 || D < 2 || D % 2 != 0 || nh * D > x.dim(1))
        fail("rope: {} heads of {} (an even head size) do not fit rows of {}", nh, D, x.dim(1));
    if (pos0 < 0) fail("rope: negative position {}", pos0);
    if (!(theta > 0.0f)) fail("rope: theta = {} must be positive", theta);
    const Device d = same_device("rope", {&x});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            // The (cos, sin) of every row's angles, on the host exactly as cpu::rope computes them.
            const int64_t T = x.dim(0), half = D / 2;
            std::vector<float> cs(size_t(T * half * 2));
            for (int64_t t = 0; t < T; ++t)
                for (int64_t i = 0; i < half; ++i) {
                    const auto [c, s] = rope_cos_sin(pos0 + t, i, D, theta);
                    cs[size_t((t * half + i) * 2)] = c, cs[size_t((t * half + i) * 2 + 1)] = s;
                }
            return cuda::rope(d.index, mp(x), x.dim(1), T, nh, D, cs.data());
        }
    cpu::rope(x.data<float>(), x.dim(1), x.dim(0), nh, D, pos0, theta);
}

namespace {
// The CPU reads the step's values; the GPU kernels read them on the device.
std::array<int32_t, 2> check_step(const Tensor& step, const char* op) {
    detail::need(step, DType::I32, op, "step");
    need_shape(step, {2}, op, "step");
    if (!step.device().is_cpu()) return {0, 0};
    return {step.data<int32_t>()[0], step.data<int32_t>()[1]};
}
}  // namespace

void embedding_at(const Tensor& out, const Tensor& step, const Tensor& wte, const Tensor& wpe) {
    const auto [id, pos] = check_step(step, "embedding_at");
    const Device d = same_device("embedding_at", {&out, &step, &wte, &wpe});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            need_f32(out, "embedding_at", "out"), need_weight(wte, "embedding_at", "wte"), need_weight(wpe, "embedding_at", "wpe");
            need_shape(out, {1, wte.dim(1)}, "embedding_at", "out");
            return cuda::embedding_at(d.index, mp(out), step.raw_data<int32_t>(), wte.raw(), wpe.raw(), wte.dtype(), wte.dim(1));
        }
    const int32_t ids[1] = {id};
    embedding(out, ids, pos, wte, wpe);
}

void kv_append_at(const Tensor& kc, const Tensor& vc, const Tensor& qkv, const Tensor& step) {
    const auto [id, pos] = check_step(step, "kv_append_at");
    (void)id;
    const Device d = same_device("kv_append_at", {&kc, &vc, &qkv, &step});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            need_f32(kc, "kv_append_at", "k cache"), need_f32(vc, "kv_append_at", "v cache"), need_f32(qkv, "kv_append_at", "qkv");
            if (kc.rank() != 3) fail("kv_append_at: k cache {} must be [H, cap, D]", kc.describe());
            need_shape(vc, kc.shape(), "kv_append_at", "v cache");
            need_shape(qkv, {1, 3 * kc.dim(0) * kc.dim(2)}, "kv_append_at", "qkv");
            return cuda::kv_append_at(d.index, mp(kc), mp(vc), fp(qkv), step.raw_data<int32_t>(), kc.dim(0), kc.dim(2), kc.dim(1));
        }
    kv_append(kc, vc, qkv, pos);
}

void attention_at(const Tensor& out, const Tensor& qkv, const Tensor& kc, const Tensor& vc, const Tensor& step,
                  float scale, const Tensor& scratch) {
    const auto [id, pos] = check_step(step, "attention_at");
    (void)id;
    const Device d = same_device("attention_at", {&out, &qkv, &kc, &vc, &step, &scratch});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            need_f32(out, "attention_at", "out"), need_f32(qkv, "attention_at", "qkv");
            need_f32(kc, "attention_at", "k cache"), need_f32(vc, "attention_at", "v cache");
            if (kc.rank() != 3) fail("attention_at: k cache {} must be [H, cap, D]", kc.describe());
            const int64_t H = kc.dim(0), D = kc.dim(2);
            need_shape(vc, kc.shape(), "attention_at", "v cache");
            need_shape(qkv, {1, 3 * H * D}, "attention_at", "qkv"), need_shape(out, {1, H * D}, "attention_at", "out");
            if (D > cuda::kMaxHeadDim) fail("attention_at: head dimension {} exceeds the CUDA kernels' {}", D, cuda::kMaxHeadDim);
            return cuda::attention_at(d.index, mp(out), fp(qkv), fp(kc), fp(vc), step.raw_data<int32_t>(), H, D, kc.dim(1), scale);
        }
    attention(out, qkv, kc, vc, pos, scale, scratch);
}

void fill(const Tensor& x, double value) {
    if (!x.defined()) fail("fill: x is undefined");
    const DType dt = x.dtype();
    if (dt != DType::F32 && dt != DType::F64 && dt != DType::I32) fail("fill: x is {}, expected F32, F64 or I32", x.describe());
    const Device d = same_device("fill", {&x});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::fill(d.index, x.raw(), dt, x.numel(), value);
    const int64_t n = x.numel();
    if (dt == DType::F32) std::fill_n(x.data<float>(), n, float(value));
    else if (dt == DType::F64) std::fill_n(x.data<double>(), n, value);
    else std::fill_n(x.data<int32_t>(), n, int32_t(value));
}

void scaled_copy(const Tensor& out, const Tensor& in, float a) {
    need_f32(out, "scaled_copy", "out"), need_f32(in, "scaled_copy", "in");
    need_shape(out, in.shape(), "scaled_copy", "out");
    const Device d = same_device("scaled_copy", {&out, &in});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::scaled_copy(d.index, mp(out), fp(in), in.numel(), a);
    cpu::scaled_copy(out.data<float>(), in.data<float>(), in.numel(), a);
}

void accumulate(const Tensor& sum, const Tensor& inc, const Tensor& value) {
    detail::need(sum, DType::F64, "accumulate", "sum"), need_f32(inc, "accumulate", "increment"), need_f32(value, "accumulate", "value");
    need_shape(inc, sum.shape(), "accumulate", "increment"), need_shape(value, sum.shape(), "accumulate", "value");
    const Device d = same_device("accumulate", {&sum, &inc, &value});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::accumulate(d.index, sum.raw_data<double>(), fp(inc), mp(value), sum.numel());
    cpu::accumulate(sum.data<double>(), inc.data<float>(), value.data<float>(), sum.numel());
}

void td_emit(const Tensor& emitted, const Tensor& y, const Tensor& prev) {
    need_f32(emitted, "td_emit", "emitted"), need_f32(y, "td_emit", "y"), need_f32(prev, "td_emit", "prev");
    need_shape(emitted, y.shape(), "td_emit", "emitted"), need_shape(prev, y.shape(), "td_emit", "prev");
    const Device d = same_device("td_emit", {&emitted, &y, &prev});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::td_emit(d.index, mp(emitted), fp(y), mp(prev), y.numel());
    cpu::td_emit(emitted.data<float>(), y.data<float>(), prev.data<float>(), y.numel());
}

void split_qkv(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& qkv) {
    need_f32(q, "split_qkv", "q"), need_f32(k, "split_qkv", "k"), need_f32(v, "split_qkv", "v"), need_f32(qkv, "split_qkv", "qkv");
    if (qkv.rank() != 2 || q.rank() != 2 || k.rank() != 2)
        fail("split_qkv: qkv {}, q {}, k {} must be 2-D", qkv.describe(), q.describe(), k.describe());
    const int64_t T = qkv.dim(0), Cq = q.dim(1), Ckv = k.dim(1), W = Cq + 2 * Ckv;
    need_shape(qkv, {T, W}, "split_qkv", "qkv");
    need_shape(q, {T, Cq}, "split_qkv", "q"), need_shape(k, {T, Ckv}, "split_qkv", "k"), need_shape(v, {T, Ckv}, "split_qkv", "v");
    const Device d = same_device("split_qkv", {&q, &k, &v, &qkv});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::split_qkv(d.index, mp(q), mp(k), mp(v), fp(qkv), T, Cq, Ckv);
    const float* src = qkv.data<float>();
    for (int64_t t = 0; t < T; ++t) {
        std::copy_n(src + t * W, Cq, q.data<float>() + t * Cq);
        std::copy_n(src + t * W + Cq, Ckv, k.data<float>() + t * Ckv);
        std::copy_n(src + t * W + Cq + Ckv, Ckv, v.data<float>() + t * Ckv);
    }
}

void matmul_nt(const Tensor& out, const Tensor& x, const Tensor& e) {
    need_f32(out, "matmul_nt", "out"), need_f32(x, "matmul_nt", "x");
    if (!(e.defined() && e.dtype() == DType::BF16 && e.device().is_cpu())) need_weight(e, "matmul_nt", "e");  // CPU: f32 or bf16
    if (x.rank() != 2 || e.rank() != 2) fail("matmul_nt: x {} and e {} must be 2-D", x.describe(), e.describe());
    const int64_t T = x.dim(0), C = x.dim(1), V = e.dim(0);
    need_shape(e, {V, C}, "matmul_nt", "e");
    need_shape(out, {T, V}, "matmul_nt", "out");
    const Device d = same_device("matmul_nt", {&out, &x, &e});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::matmul_nt(d.index, mp(out), fp(x), e.raw(), e.dtype(), T, C, V);
    if (e.dtype() == DType::BF16) return cpu::matmul_nt_bf16(out.data<float>(), x.data<float>(), e.raw_data<uint16_t>(), T, C, V);
    if (e.dtype() != DType::F32) fail("matmul_nt: the CPU takes an f32 or bf16 head, not {}", e.describe());
    cpu::matmul_nt_f32(out.data<float>(), x.data<float>(), e.data<float>(), T, C, V);
}

void top_k(const Tensor& values, const Tensor& indices, const Tensor& logits) {
    need_f32(logits, "top_k", "logits"), need_f32(values, "top_k", "values");
    detail::need(indices, DType::I32, "top_k", "indices");
    if (logits.rank() != 2 || values.rank() != 2) fail("top_k: logits {} and values {} must be 2-D", logits.describe(), values.describe());
    const int64_t R = logits.dim(0), V = logits.dim(1), k = values.dim(1);
    if (k < 1 || k > 64) fail("top_k: k = {} must be in [1, 64]", k);
    need_shape(values, {R, k}, "top_k", "values"), need_shape(indices, {R, k}, "top_k", "indices");
    const Device d = same_device("top_k", {&values, &indices, &logits});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::top_k(d.index, mp(values), indices.raw_data<int32_t>(), fp(logits), R, V, int(k));
    // The plain version: order ids by (value descending, id ascending), NaN excluded.
    const float* l = logits.data<float>();
    float* val = values.data<float>();
    int32_t* idx = indices.data<int32_t>();
    std::vector<int32_t> order;
    for (int64_t r = 0; r < R; ++r) {
        const float* row = l + r * V;
        order.clear();
        for (int32_t j = 0; j < V; ++j)
            if (!std::isnan(row[j])) order.push_back(j);
        const size_t m = std::min<size_t>(size_t(k), order.size());
        std::partial_sort(order.begin(), order.begin() + ptrdiff_t(m), order.end(),
                          [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
        for (int64_t i = 0; i < k; ++i) {
            idx[r * k + i] = size_t(i) < m ? order[size_t(i)] : -1;
            val[r * k + i] = size_t(i) < m ? row[order[size_t(i)]] : NAN;
        }
    }
}

}  // namespace stac::kernels
