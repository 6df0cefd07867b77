#include "kernels/spiking.h"

#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/spiking.h"
#include "kernels/cuda/ops.h"

namespace stac::kernels {

using detail::kCuda;
using detail::need;
using detail::need_shape;
using detail::same_device;

namespace {

// Checks a site's inverse thresholds against N columns; returns whether they are per column.
bool check_bounds(const SiteBounds& b, int64_t N, const char* op) {
    need(b.inv, DType::F32, op, "inverse thresholds");
    if (b.inv.rank() != 1 || (b.inv.dim(0) != 1 && b.inv.dim(0) != N))
        fail("{}: inverse thresholds {} must be [1] or [{}]", op, b.inv.describe(), N);
    if (b.n_min > 0 || b.n_max < 0 || b.n_max > 127 || b.n_min < -127)
        fail("{}: bounds [{}, {}] must contain 0 and fit int8", op, b.n_min, b.n_max);
    return b.inv.dim(0) == N && N > 1;
}

void need_min(const Tensor& t, DType dt, int64_t n, const char* op, const char* what) {
    need(t, dt, op, what);
    if (t.numel() < n) fail("{}: {} holds {} elements, needs {}", op, what, t.numel(), n);
}

void need_cache(const Tensor& c, DType dt, int64_t P, int64_t T, const char* op) {
    need(c, dt, op, "cache");
    if (c.rank() != 3) fail("{}: cache {} must be [H, cap, D]", op, c.describe());
    if (P < 0 || P + T > c.dim(1)) fail("{}: keys 0..{} exceed the cache capacity {}", op, P + T, c.dim(1));
}

}  // namespace

void quantize(const Tensor& counts, const Tensor& x, const SiteBounds& b) {
    need(x, DType::F32, "quantize", "x"), need(counts, DType::I8, "quantize", "counts");
    if (x.rank() != 2) fail("quantize: x {} must be [T, N]", x.describe());
    need_shape(counts, x.shape(), "quantize", "counts");
    const bool pc = check_bounds(b, x.dim(1), "quantize");
    const Device d = same_device("quantize", {&counts, &x, &b.inv});
    if constexpr (kCuda)
        if (d.is_cuda())
            return cuda::quantize(d.index, counts.raw_data<int8_t>(), x.raw_data<float>(), x.dim(0), x.dim(1),
                                  b.inv.raw_data<float>(), pc, b.n_min, b.n_max);
    cpu::quantize(counts.data<int8_t>(), x.data<float>(), x.dim(0), x.dim(1), b.inv.data<float>(), pc, b.n_min, b.n_max);
}

void token_scale(const Tensor& r, const Tensor& xs, const Tensor& x, const SiteBounds& b) {
    need(x, DType::F32, "token_scale", "x"), need(xs, DType::F32, "token_scale", "xs"), need(r, DType::F32, "token_scale", "r");
    if (x.rank() != 2) fail("token_scale: x {} must be [T, N]", x.describe());
    need_shape(xs, x.shape(), "token_scale", "xs");
    need_shape(r, {x.dim(0)}, "token_scale", "r");
    const bool pc = check_bounds(b, x.dim(1), "token_scale");
    if (b.n_max < 1) fail("token_scale: n_max {} must be at least 1", b.n_max);
    const Device d = same_device("token_scale", {&r, &xs, &x, &b.inv});
    if constexpr (kCuda)
        if (d.is_cuda())
            return cuda::token_scale(d.index, r.raw_data<float>(), xs.raw_data<float>(), x.raw_data<float>(), x.dim(0),
                                     x.dim(1), b.inv.raw_data<float>(), pc, b.n_min, b.n_max);
    cpu::token_scale(r.data<float>(), xs.data<float>(), x.data<float>(), x.dim(0), x.dim(1), b.inv.data<float>(), pc,
                     b.n_min, b.n_max);
}

void rescale_rows(const Tensor& out, const Tensor& r, const Tensor& b) {
    need(out, DType::F32, "rescale_rows", "out"), need(r, DType::F32, "rescale_rows", "r");
    if (out.rank() != 2) fail("rescale_rows: out {} must be [T, N]", out.describe());
    need_shape(r, {out.dim(0)}, "rescale_rows", "r");
    if (b.defined()) need(b, DType::F32, "rescale_rows", "bias"), need_shape(b, {out.dim(1)}, "rescale_rows", "bias");
    const Device d = same_device("rescale_rows", {&out, &r, &b});
    if constexpr (kCuda)
        if (d.is_cuda())
            return cuda::rescale_rows(d.index, out.raw_data<float>(), r.raw_data<float>(),
                                      b.defined() ? b.raw_data<float>() : nullptr, out.dim(0), out.dim(1));
    cpu::rescale_rows(out.data<float>(), r.data<float>(), b.defined() ? b.data<float>() : nullptr, out.dim(0), out.dim(1));
}

void rescale_head_rows(const Tensor& out, const Tensor& r) {
    need(out, DType::F32, "rescale_head_rows", "out"), need(r, DType::F32, "rescale_head_rows", "r");
    if (out.rank() != 2 || r.rank() != 2 || r.dim(1) != out.dim(0) || r.dim(0) < 1 || out.dim(1) % r.dim(0) != 0)
        fail("rescale_head_rows: out {} must be [T, H D] and r {} [H, T]", out.describe(), r.describe());
    const int64_t T = out.dim(0), H = r.dim(0), D = out.dim(1) / H;
    const Device d = same_device("rescale_head_rows", {&out, &r});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::rescale_head_rows(d.index, out.raw_data<float>(), r.raw_data<float>(), T, H, D);
    cpu::rescale_head_rows(out.data<float>(), r.data<float>(), T, H, D);
}

int64_t neurons_layerwise(const Tensor& counts, const Tensor& spikes, const Tensor& x, const SiteBounds& b, int S) {
    need(x, DType::F32, "neurons", "x"), need(counts, DType::I8, "neurons", "counts");
    if (x.rank() != 2) fail("neurons: x {} must be [T, N]", x.describe());
    if (S < 1) fail("neurons: {} timesteps", S);
    need_shape(counts, x.shape(), "neurons", "counts");
    if (spikes.defined()) need(spikes, DType::I8, "neurons", "spikes"), need_shape(spikes, {S, x.dim(0), x.dim(1)}, "neurons", "spikes");
    const bool pc = check_bounds(b, x.dim(1), "neurons");
    const Device d = same_device("neurons", {&counts, &spikes, &x, &b.inv});
    if constexpr (kCuda)
        if (d.is_cuda())
            return cuda::neurons_layerwise(d.index, counts.raw_data<int8_t>(), spikes.defined() ? spikes.raw_data<int8_t>() : nullptr,
                                           x.raw_data<float>(), x.dim(0), x.dim(1), b.inv.raw_data<float>(), pc,
                                           b.n_min, b.n_max, S);
    return cpu::neurons_layerwise(counts.data<int8_t>(), spikes.defined() ? spikes.data<int8_t>() : nullptr,
                                  x.data<float>(), x.dim(0), x.dim(1), b.inv.data<float>(), pc, b.n_min, b.n_max, S);
}

int64_t neurons_step(const Tensor& v, const Tensor& n, const Tensor& spikes, const Tensor& increment,
                     const SiteBounds& b) {
    need(increment, DType::F32, "neurons_step", "increment"), need(spikes, DType::I8, "neurons_step", "spikes");
    need(v, DType::F64, "neurons_step", "membranes"), need(n, DType::I32, "neurons_step", "counters");
    if (increment.rank() != 2) fail("neurons_step: increment {} must be [T, N]", increment.describe());
    for (const Tensor* t : {&v, &n, &spikes}) need_shape(*t, increment.shape(), "neurons_step", "state");
    const bool pc = check_bounds(b, increment.dim(1), "neurons_step");
    const Device d = same_device("neurons_step", {&v, &n, &spikes, &increment, &b.inv});
    if constexpr (kCuda)
        if (d.is_cuda())
            return cuda::neurons_step(d.index, v.raw_data<double>(), n.raw_data<int32_t>(), spikes.raw_data<int8_t>(),
                                      increment.raw_data<float>(), increment.dim(0), increment.dim(1),
                                      b.inv.raw_data<float>(), pc, b.n_min, b.n_max);
    return cpu::neurons_step(v.data<double>(), n.data<int32_t>(), spikes.data<int8_t>(), increment.data<float>(),
                             increment.dim(0), increment.dim(1), b.inv.data<float>(), pc, b.n_min, b.n_max);
}

void narrow_counts(const Tensor& out, const Tensor& in) {
    need(out, DType::I8, "narrow_counts", "out"), need(in, DType::I32, "narrow_counts", "in");
    if (out.numel() != in.numel()) fail("narrow_counts: {} and {} differ in size", out.describe(), in.describe());
    const Device d = same_device("narrow_counts", {&out, &in});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::narrow_counts(d.index, out.raw_data<int8_t>(), in.raw_data<int32_t>(), in.numel());
    const int32_t* src = in.data<int32_t>();
    int8_t* dst = out.data<int8_t>();
    for (int64_t i = 0; i < in.numel(); ++i) {
        if (src[i] < -127 || src[i] > 127) fail("narrow_counts: counter {} does not fit int8", src[i]);
        dst[i] = int8_t(src[i]);
    }
}

namespace {
void check_linear(const Tensor& out, const Tensor& w, const Tensor& mult, const Tensor& b, int64_t T, int64_t K,
                  const char* op) {
    need(out, DType::F32, op, "out"), need(w, DType::F64, op, "w"), need(mult, DType::F32, op, "mult");
    need_shape(w, {K, w.dim(1)}, op, "w");
    const int64_t N = w.dim(1);
    need_shape(out, {T, N}, op, "out");
    need_shape(mult, {N}, op, "mult");
    if (b.defined()) need(b, DType::F32, op, "bias"), need_shape(b, {N}, op, "bias");
}
}  // namespace

void linear_counts(const Tensor& out, const Tensor& counts, const Tensor& w, const Tensor& mult, const Tensor& b,
                   const Tensor& scratch) {
    need(counts, DType::I8, "linear_counts", "counts");
    if (counts.rank() != 2) fail("linear_counts: counts {} must be [T, K]", counts.describe());
    const int64_t T = counts.dim(0), K = counts.dim(1);
    check_linear(out, w, mult, b, T, K, "linear_counts");
    const Device d = same_device("linear_counts", {&out, &counts, &w, &mult, &b, &scratch});
    if constexpr (kCuda)
        if (d.is_cuda())
            return cuda::linear_counts(d.index, out.raw_data<float>(), counts.raw_data<int8_t>(), T, K, w.raw_data<double>(),
                                       w.dim(1), mult.raw_data<float>(), b.defined() ? b.raw_data<float>() : nullptr);
    need_min(scratch, DType::F64, T * K + T * w.dim(1), "linear_counts", "scratch");
    cpu::linear_counts(out.data<float>(), counts.data<int8_t>(), T, K, w.data<double>(), w.dim(1), mult.data<float>(),
                       b.defined() ? b.data<float>() : nullptr, scratch.data<double>());
}

int64_t linear_spikes(const Tensor& out, const Tensor& spikes, const Tensor& w, const Tensor& mult, const Tensor& b,
                      const Tensor& acc) {
    need(spikes, DType::I8, "linear_spikes", "spikes");
    if (spikes.rank() != 3) fail("linear_spikes: spikes {} must be [S, T, K]", spikes.describe());
    const int64_t S = spikes.dim(0), T = spikes.dim(1), K = spikes.dim(2);
    check_linear(out, w, mult, b, T, K, "linear_spikes");
    const Device d = same_device("linear_spikes", {&out, &spikes, &w, &mult, &b, &acc});
    if constexpr (kCuda)
        if (d.is_cuda())
            return cuda::linear_spikes(d.index, out.raw_data<float>(), spikes.raw_data<int8_t>(), int(S), T, K,
                                       w.raw_data<double>(), w.dim(1), mult.raw_data<float>(),
                                       b.defined() ? b.raw_data<float>() : nullptr);
    need_min(acc, DType::F64, T * w.dim(1), "linear_spikes", "accumulator");
    return cpu::linear_spikes(out.data<float>(), spikes.data<int8_t>(), int(S), T, K, w.data<double>(), w.dim(1),
                              mult.data<float>(), b.defined() ? b.data<float>() : nullptr, acc.data<double>());
}

void kv_append_counts(const Tensor& kc, const Tensor& vc, const Tensor& nk, const Tensor& nv, int64_t pos0) {
    need(nk, DType::I8, "kv_append_counts", "k counts"), need(nv, DType::I8, "kv_append_counts", "v counts");
    const int64_t T = nk.dim(0);
    need_cache(kc, DType::I8, pos0, T, "kv_append_counts");
    need_shape(vc, kc.shape(), "kv_append_counts", "v cache");
    const int64_t G = kc.dim(0), D = kc.dim(2);
    need_shape(nk, {T, G * D}, "kv_append_counts", "k counts"), need_shape(nv, {T, G * D}, "kv_append_counts", "v counts");
    const Device d = same_device("kv_append_counts", {&kc, &vc, &nk, &nv});
    if constexpr (kCuda)
        if (d.is_cuda())
            return cuda::kv_append_counts(d.index, kc.raw_data<int8_t>(), vc.raw_data<int8_t>(), nk.raw_data<int8_t>(),
                                          nv.raw_data<int8_t>(), T, pos0, G, D, kc.dim(1));
    cpu::kv_append_counts(kc.data<int8_t>(), vc.data<int8_t>(), nk.data<int8_t>(), nv.data<int8_t>(), T, pos0, G, D,
                          kc.dim(1));
}

namespace {
// Query heads per key/value head: H query heads over a cache of G heads (H a multiple of G).
int64_t group_of(int64_t H, int64_t G, const char* op) {
    if (H < 1 || G < 1 || H % G != 0) fail("{}: {} query heads do not share {} key/value heads evenly", op, H, G);
    return H / G;
}
// The CUDA attention kernels index one key/value head per query head (GPT-2); grouped-query
// attention (a Llama with fewer key/value heads) runs on the CPU only.
[[maybe_unused]] void cuda_heads_equal(int64_t group, const char* op) {
    if (group != 1)
        fail("{}: grouped-query attention ({} query heads per key/value head) runs on the CPU only, not on a GPU", op,
             group);
}
}  // namespace

void scores_counts(const Tensor& scores, const Tensor& nq, const Tensor& kc, int64_t P) {
    need(nq, DType::I8, "scores_counts", "queries");
    need(scores, DType::I32, "scores_counts", "scores");
    if (scores.rank() != 3) fail("scores_counts: scores {} must be [H, T, L]", scores.describe());
    const int64_t T = nq.dim(0), H = scores.dim(0);
    need_cache(kc, DType::I8, P, T, "scores_counts");
    const int64_t G = kc.dim(0), D = kc.dim(2), group = group_of(H, G, "scores_counts");
    need_shape(nq, {T, H * D}, "scores_counts", "queries");
    need_shape(scores, {H, T, P + T}, "scores_counts", "scores");
    const Device d = same_device("scores_counts", {&scores, &nq, &kc});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            cuda_heads_equal(group, "scores_counts");
            return cuda::scores_counts(d.index, scores.raw_data<int32_t>(), nq.raw_data<int8_t>(), kc.raw_data<int8_t>(), T,
                                       P, H, D, kc.dim(1));
        }
    cpu::scores_counts(scores.data<int32_t>(), nq.data<int8_t>(), kc.data<int8_t>(), T, P, H, D, kc.dim(1), group);
}

void pv_counts(const Tensor& out, const Tensor& np, const Tensor& vc, int64_t P) {
    need(np, DType::I8, "pv_counts", "probabilities");
    if (np.rank() != 3) fail("pv_counts: probabilities {} must be [H, T, L]", np.describe());
    const int64_t H = np.dim(0), T = np.dim(1);
    need_cache(vc, DType::I8, P, T, "pv_counts");
    const int64_t G = vc.dim(0), D = vc.dim(2), group = group_of(H, G, "pv_counts");
    need_shape(np, {H, T, P + T}, "pv_counts", "probabilities");
    need(out, DType::I32, "pv_counts", "out"), need_shape(out, {T, H * D}, "pv_counts", "out");
    const Device d = same_device("pv_counts", {&out, &np, &vc});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            cuda_heads_equal(group, "pv_counts");
            return cuda::pv_counts(d.index, out.raw_data<int32_t>(), np.raw_data<int8_t>(), vc.raw_data<int8_t>(), T, P, H,
                                   D, vc.dim(1));
        }
    cpu::pv_counts(out.data<int32_t>(), np.data<int8_t>(), vc.data<int8_t>(), T, P, H, D, vc.dim(1), group);
}

int64_t scores_spikes(const Tensor& scores, const Tensor& qs, const Tensor& ks, const Tensor& kc, int64_t P,
                      const Tensor& run) {
    need(qs, DType::I8, "scores_spikes", "q spikes"), need(ks, DType::I8, "scores_spikes", "k spikes");
    if (qs.rank() != 3) fail("scores_spikes: q spikes {} must be [S, T, C]", qs.describe());
    need(scores, DType::I32, "scores_spikes", "scores");
    if (scores.rank() != 3) fail("scores_spikes: scores {} must be [H, T, L]", scores.describe());
    const int64_t S = qs.dim(0), T = qs.dim(1), H = scores.dim(0);
    need_cache(kc, DType::I8, P, T, "scores_spikes");
    const int64_t G = kc.dim(0), D = kc.dim(2), group = group_of(H, G, "scores_spikes");
    need_shape(qs, {S, T, H * D}, "scores_spikes", "q spikes"), need_shape(ks, {S, T, G * D}, "scores_spikes", "k spikes");
    need_shape(scores, {H, T, P + T}, "scores_spikes", "scores");
    const Device d = same_device("scores_spikes", {&scores, &qs, &ks, &kc, &run});
    if constexpr (kCuda)
        if (d.is_cuda()) {  // the GPU keeps its running sums in registers: `run` is not needed
            cuda_heads_equal(group, "scores_spikes");
            return cuda::scores_spikes(d.index, scores.raw_data<int32_t>(), qs.raw_data<int8_t>(), ks.raw_data<int8_t>(),
                                       kc.raw_data<int8_t>(), int(S), T, P, H, D, kc.dim(1));
        }
    need_min(run, DType::I32, T * H * D + T * G * D, "scores_spikes", "running sums");
    return cpu::scores_spikes(scores.data<int32_t>(), qs.data<int8_t>(), ks.data<int8_t>(), kc.data<int8_t>(), int(S),
                              T, P, H, D, kc.dim(1), run.data<int32_t>(), group);
}

int64_t pv_spikes(const Tensor& out, const Tensor& ps, const Tensor& vs, const Tensor& vc, int64_t P,
                  const Tensor& run) {
    need(ps, DType::I8, "pv_spikes", "probability spikes"), need(vs, DType::I8, "pv_spikes", "v spikes");
    if (ps.rank() != 4) fail("pv_spikes: probability spikes {} must be [S, H, T, L]", ps.describe());
    const int64_t S = ps.dim(0), H = ps.dim(1), T = ps.dim(2);
    need_cache(vc, DType::I8, P, T, "pv_spikes");
    const int64_t G = vc.dim(0), D = vc.dim(2), group = group_of(H, G, "pv_spikes");
    need_shape(ps, {S, H, T, P + T}, "pv_spikes", "probability spikes");
    need_shape(vs, {S, T, G * D}, "pv_spikes", "v spikes");
    need(out, DType::I32, "pv_spikes", "out"), need_shape(out, {T, H * D}, "pv_spikes", "out");
    const Device d = same_device("pv_spikes", {&out, &ps, &vs, &vc, &run});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            cuda_heads_equal(group, "pv_spikes");
            return cuda::pv_spikes(d.index, out.raw_data<int32_t>(), ps.raw_data<int8_t>(), vs.raw_data<int8_t>(),
                                   vc.raw_data<int8_t>(), int(S), T, P, H, D, vc.dim(1));
        }
    need_min(run, DType::I32, H * T * (P + T) + T * G * D, "pv_spikes", "running sums");
    return cpu::pv_spikes(out.data<int32_t>(), ps.data<int8_t>(), vs.data<int8_t>(), vc.data<int8_t>(), int(S), T, P,
                          H, D, vc.dim(1), run.data<int32_t>(), group);
}

void dequantize_heads(const Tensor& out, const Tensor& in, const Tensor& mult) {
    need(out, DType::F32, "dequantize_heads", "out"), need(in, DType::I32, "dequantize_heads", "in");
    need(mult, DType::F32, "dequantize_heads", "multipliers");
    need_shape(out, in.shape(), "dequantize_heads", "out");
    const int64_t H = mult.numel();
    const Device d = same_device("dequantize_heads", {&out, &in, &mult});
    if (in.rank() == 3 && in.dim(0) != H)
        fail("dequantize_heads: {} has {} heads, multipliers {}", in.describe(), in.dim(0), H);
    if (in.rank() == 2 && in.dim(1) % H != 0) fail("dequantize_heads: {} columns do not split into {} heads", in.dim(1), H);
    if constexpr (kCuda)
        if (d.is_cuda() && (in.rank() == 2 || in.rank() == 3)) {
            const int64_t per = in.rank() == 3 ? in.dim(1) * in.dim(2) : 0, C = in.rank() == 2 ? in.dim(1) : 0;
            return cuda::dequantize_heads(d.index, out.raw_data<float>(), in.raw_data<int32_t>(), mult.raw_data<float>(),
                                          in.numel(), per, C, C / H);
        }
    const int32_t* src = in.data<int32_t>();
    float* dst = out.data<float>();
    const float* m = mult.data<float>();
    if (in.rank() == 3) {  // [H, T, L]
        if (in.dim(0) != H) fail("dequantize_heads: {} has {} heads, multipliers {}", in.describe(), in.dim(0), H);
        const int64_t per = in.dim(1) * in.dim(2);
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < per; ++i) dst[h * per + i] = float(src[h * per + i]) * m[h];
    } else if (in.rank() == 2) {  // [T, C]
        const int64_t T = in.dim(0), C = in.dim(1);
        if (C % H != 0) fail("dequantize_heads: {} columns do not split into {} heads", C, H);
        const int64_t D = C / H;
        for (int64_t t = 0; t < T; ++t)
            for (int64_t c = 0; c < C; ++c) dst[t * C + c] = float(src[t * C + c]) * m[c / D];
    } else {
        fail("dequantize_heads: {} must be [H, T, L] or [T, C]", in.describe());
    }
}

void softmax_causal(const Tensor& x, int64_t P) {
    need(x, DType::F32, "softmax_causal", "x");
    if (x.rank() != 3 || x.dim(2) != P + x.dim(1)) fail("softmax_causal: x {} must be [H, T, P + T] with P = {}", x.describe(), P);
    const Device d = same_device("softmax_causal", {&x});
    if constexpr (kCuda)
        if (d.is_cuda()) return cuda::softmax_causal(d.index, x.raw_data<float>(), x.dim(0), x.dim(1), P);
    cpu::softmax_causal(x.data<float>(), x.dim(0), x.dim(1), P);
}

void attention_scores(const Tensor& scores, const Tensor& qkv, const Tensor& kc, int64_t P, float scale) {
    need(qkv, DType::F32, "attention_scores", "qkv");
    need(scores, DType::F32, "attention_scores", "scores");
    if (scores.rank() != 3) fail("attention_scores: scores {} must be [H, T, L]", scores.describe());
    const int64_t T = qkv.dim(0), H = scores.dim(0);
    need_cache(kc, DType::F32, P, T, "attention_scores");
    const int64_t G = kc.dim(0), D = kc.dim(2), group = group_of(H, G, "attention_scores");
    need_shape(qkv, {T, (H + 2 * G) * D}, "attention_scores", "qkv");
    need_shape(scores, {H, T, P + T}, "attention_scores", "scores");
    const Device d = same_device("attention_scores", {&scores, &qkv, &kc});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            return cuda::attention_scores(d.index, scores.raw_data<float>(), qkv.raw_data<float>(), (H + 2 * G) * D,
                                          kc.raw_data<float>(), T, P, H, D, kc.dim(1), scale, group);
        }
    cpu::attention_scores(scores.data<float>(), qkv.data<float>(), (H + 2 * G) * D, kc.data<float>(), T, P, H, D,
                          kc.dim(1), scale, group);
}

void attention_pv(const Tensor& out, const Tensor& probs, const Tensor& vc, int64_t P) {
    need(probs, DType::F32, "attention_pv", "probabilities");
    if (probs.rank() != 3) fail("attention_pv: probabilities {} must be [H, T, L]", probs.describe());
    const int64_t H = probs.dim(0), T = probs.dim(1);
    need_cache(vc, DType::F32, P, T, "attention_pv");
    const int64_t G = vc.dim(0), D = vc.dim(2), group = group_of(H, G, "attention_pv");
    need_shape(probs, {H, T, P + T}, "attention_pv", "probabilities");
    need(out, DType::F32, "attention_pv", "out"), need_shape(out, {T, H * D}, "attention_pv", "out");
    const Device d = same_device("attention_pv", {&out, &probs, &vc});
    if constexpr (kCuda)
        if (d.is_cuda()) {
            return cuda::attention_pv(d.index, out.raw_data<float>(), H * D, probs.raw_data<float>(), vc.raw_data<float>(),
                                      T, P, H, D, vc.dim(1), group);
        }
    cpu::attention_pv(out.data<float>(), H * D, probs.data<float>(), vc.data<float>(), T, P, H, D, vc.dim(1), group);
}

}  // namespace stac::kernels
