// Hand-written CUDA kernels of the GPT-2 forward that are not GEMMs or attention: LayerNorm (alone
// and fused with the residual add), activations, element-wise steps of the streaming schedule,
// embedding + position add, the KV-cache append and top-k. The per-element math comes from
// kernels/math.h and core/dtype.h, the same code the CPU paths run.
#include <cmath>

#include "core/device.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace stac::cuda {

namespace {

// One block per row: x: [T, C]. Two passes over the row in registers-then-global (mean, then the
// centred variance), as the CPU kernel, so the variance keeps its precision for large means.
constexpr int kNormThreads = 256;

__global__ void layernorm_kernel(float* out, float* x, const float* y, const float* g, const float* b, int64_t C,
                                 float eps) {
    __shared__ float red[32];
    float* xr = x + int64_t(blockIdx.x) * C;
    float* o = out + int64_t(blockIdx.x) * C;
    const float* yr = y ? y + int64_t(blockIdx.x) * C : nullptr;
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float v = xr[c];
        if (yr) {  // fused residual add: each thread touches only its own columns, so out may alias y
            v += yr[c];
            xr[c] = v;
        }
        s += v;
    }
    const float mean = block_sum(s, red) / float(C);
    float q = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        const float d = xr[c] - mean;
        q += d * d;
    }
    const float var = block_sum(q, red) / float(C);
    const float inv = 1.0f / sqrtf(var + eps);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = (xr[c] - mean) * inv * g[c] + b[c];
}

__global__ void activation_kernel(float* x, int64_t n, Activation act) {
    STAC_GRID_LOOP(i, n) x[i] = activate(act, x[i]);
}
__global__ void add_kernel(float* x, const float* y, int64_t n) {
    STAC_GRID_LOOP(i, n) x[i] += y[i];
}
__global__ void scaled_copy_kernel(float* out, const float* in, int64_t n, float a) {
    STAC_GRID_LOOP(i, n) out[i] = a * in[i];
}
__global__ void accumulate_kernel(double* sum, const float* inc, float* value, int64_t n) {
    STAC_GRID_LOOP(i, n) {
        const double s = sum[i] + double(inc[i]);
        sum[i] = s;
        value[i] = float(s);
    }
}
__global__ void td_emit_kernel(float* emitted, const float* y, float* prev, int64_t n) {
    STAC_GRID_LOOP(i, n) {
        emitted[i] = y[i] - prev[i];
        prev[i] = y[i];
    }
}

// pos_at: if not null, pos0 is read from it (a CUDA graph's decode step).
template <typename W>
__global__ void embedding_kernel(float* out, const int32_t* ids, int64_t T, int64_t pos0, const W* wte, const W* wpe,
                                 int64_t C, const int32_t* pos_at) {
    if (pos_at) pos0 = *pos_at;
    STAC_GRID_LOOP(i, T * C) {
        const int64_t t = i / C, c = i % C;
        // No position table (Llama: positions enter through RoPE): the token embedding alone.
        out[i] = load_w(wte, int64_t(ids[t]) * C + c) + (wpe ? load_w(wpe, (pos0 + t) * C + c) : 0.0f);
    }
}

// qkv: [T, 3C] -> kc, vc: [H, cap, D] rows pos0..pos0+T-1; one thread per (t, c) of K and of V.
template <typename E>
__global__ void kv_append_kernel(E* kc, E* vc, const E* k, const E* v, int64_t ld, int64_t T, int64_t pos0, int64_t H,
                                 int64_t D, int64_t cap, const int32_t* pos_at) {
    if (pos_at) pos0 = *pos_at;
    const int64_t C = H * D;
    STAC_GRID_LOOP(i, T * C) {
        const int64_t t = i / C, c = i % C, h = c / D, d = c % D;
        const int64_t dst = (h * cap + pos0 + t) * D + d;
        kc[dst] = k[t * ld + c];
        vc[dst] = v[t * ld + c];
    }
}

// Top-k of one row per block by k rounds of a block-wide arg-max; each round excludes the winners
// so far (value, then lower id, so ties go to the lower id, as the CPU sampler orders them).
constexpr int kTopKThreads = 1024;
__global__ void top_k_kernel(float* values, int32_t* indices, const float* logits, int64_t V, int k) {
    __shared__ float best_v[32];
    __shared__ int64_t best_i[32];
    __shared__ float prev_v;
    __shared__ int64_t prev_i;
    const float* row = logits + int64_t(blockIdx.x) * V;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (threadIdx.x == 0) prev_v = INFINITY, prev_i = -1;
    __syncthreads();
    for (int r = 0; r < k; ++r) {
        const float pv = prev_v;
        const int64_t pi = prev_i;
        // "a ranks before b": larger value, or equal value and lower id (NaN ranks last)
        float bv = -INFINITY;
        int64_t bi = -1;
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
            const float v = row[j];
            if (v != v) continue;
            const bool after_prev = v < pv || (v == pv && j > pi);
            if (!after_prev) continue;
            if (bi < 0 || v > bv || (v == bv && j < bi)) bv = v, bi = j;
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const long long oi = __shfl_xor_sync(0xffffffffu, (long long)bi, o);
            if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi;
        }
        __syncthreads();
        if (lane == 0) best_v[warp] = bv, best_i[warp] = bi;
        __syncthreads();
        if (threadIdx.x == 0) {
            float v = -INFINITY;
            int64_t i = -1;
            for (int w = 0; w < nw; ++w)
                if (best_i[w] >= 0 && (i < 0 || best_v[w] > v || (best_v[w] == v && best_i[w] < i))) v = best_v[w], i = best_i[w];
            values[int64_t(blockIdx.x) * k + r] = i >= 0 ? v : NAN;
            indices[int64_t(blockIdx.x) * k + r] = int32_t(i);
            prev_v = v, prev_i = i;
            if (i < 0) prev_v = -INFINITY, prev_i = INT64_MAX;  // nothing left: later rounds find nothing
        }
        __syncthreads();
    }
}

}  // namespace

void layernorm(int dev, float* out, const float* x, const float* g, const float* b, int64_t T, int64_t C, float eps) {
    if (T == 0) return;
    layernorm_kernel<<<unsigned(T), kNormThreads, 0, cuda_stream(dev)>>>(out, const_cast<float*>(x), nullptr, g, b, C, eps);
    STAC_CUDA_LAUNCHED("layernorm_kernel");
}

void add_layernorm(int dev, float* x, const float* y, float* out, const float* g, const float* b, int64_t T, int64_t C,
                   float eps) {
    if (T == 0) return;
    layernorm_kernel<<<unsigned(T), kNormThreads, 0, cuda_stream(dev)>>>(out, x, y, g, b, C, eps);
    STAC_CUDA_LAUNCHED("add_layernorm_kernel");
}

void activation(int dev, float* x, int64_t n, Activation act) {
    if (n == 0) return;
    activation_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(x, n, act);
    STAC_CUDA_LAUNCHED("activation_kernel");
}

void add(int dev, float* x, const float* y, int64_t n) {
    if (n == 0) return;
    add_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(x, y, n);
    STAC_CUDA_LAUNCHED("add_kernel");
}

namespace {
template <typename E>
__global__ void fill_kernel(E* x, int64_t n, E value) {
    STAC_GRID_LOOP(i, n) x[i] = value;
}
}  // namespace

void fill(int dev, void* x, DType dt, int64_t n, double value) {
    if (n == 0) return;
    cudaStream_t s = cuda_stream(dev);
    if (dt == DType::F32) fill_kernel<float><<<blocks_for(n), kThreads, 0, s>>>(static_cast<float*>(x), n, float(value));
    else if (dt == DType::F64) fill_kernel<double><<<blocks_for(n), kThreads, 0, s>>>(static_cast<double*>(x), n, value);
    else if (dt == DType::I32) fill_kernel<int32_t><<<blocks_for(n), kThreads, 0, s>>>(static_cast<int32_t*>(x), n, int32_t(value));
    else throw Error("CUDA fill: unsupported dtype");
    STAC_CUDA_LAUNCHED("fill_kernel");
}

void scaled_copy(int dev, float* out, const float* in, int64_t n, float a) {
    if (n == 0) return;
    scaled_copy_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(out, in, n, a);
    STAC_CUDA_LAUNCHED("scaled_copy_kernel");
}

void accumulate(int dev, double* sum, const float* inc, float* value, int64_t n) {
    if (n == 0) return;
    accumulate_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(sum, inc, value, n);
    STAC_CUDA_LAUNCHED("accumulate_kernel");
}

void td_emit(int dev, float* emitted, const float* y, float* prev, int64_t n) {
    if (n == 0) return;
    td_emit_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(emitted, y, prev, n);
    STAC_CUDA_LAUNCHED("td_emit_kernel");
}

void embedding(int dev, float* out, const int32_t* host_ids, int64_t T, int64_t pos0, const void* wte, const void* wpe,
               DType wdt, int64_t C) {
    if (T == 0) return;
    Tensor ids = temp(T, DType::I32, dev);
    copy_bytes(ids.raw(), Device::cuda(dev), host_ids, Device::cpu(), size_t(T) * sizeof(int32_t));
    with_weight_type(wdt, [&](auto tag) {
        using W = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
        embedding_kernel<W><<<blocks_for(T * C), kThreads, 0, cuda_stream(dev)>>>(
            out, ids.raw_data<int32_t>(), T, pos0, static_cast<const W*>(wte), static_cast<const W*>(wpe), C, nullptr);
    });
    STAC_CUDA_LAUNCHED("embedding_kernel");
}

void embedding_at(int dev, float* out, const int32_t* step, const void* wte, const void* wpe, DType wdt, int64_t C) {
    with_weight_type(wdt, [&](auto tag) {
        using W = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
        embedding_kernel<W><<<blocks_for(C), kThreads, 0, cuda_stream(dev)>>>(
            out, step, 1, 0, static_cast<const W*>(wte), static_cast<const W*>(wpe), C, step + 1);
    });
    STAC_CUDA_LAUNCHED("embedding_kernel (graph step)");
}

void kv_append_at(int dev, float* kc, float* vc, const float* qkv, const int32_t* step, int64_t H, int64_t D,
                  int64_t cap) {
    const int64_t C = H * D;
    kv_append_kernel<float><<<blocks_for(C), kThreads, 0, cuda_stream(dev)>>>(kc, vc, qkv + C, qkv + 2 * C, 3 * C, 1, 0,
                                                                              H, D, cap, step + 1);
    STAC_CUDA_LAUNCHED("kv_append_kernel (graph step)");
}

void kv_append(int dev, float* kc, float* vc, const float* qkv, int64_t T, int64_t pos0, int64_t H, int64_t D,
               int64_t cap, int64_t Hq) {
    if (T == 0) return;
    if (Hq <= 0) Hq = H;
    // qkv: [T, (Hq + 2H) D] with K at column Hq D and V at (Hq + H) D; the cache keeps the H key/value heads.
    const int64_t C = H * D, Cq = Hq * D;
    kv_append_kernel<float><<<blocks_for(T * C), kThreads, 0, cuda_stream(dev)>>>(kc, vc, qkv + Cq, qkv + Cq + C, Cq + 2 * C,
                                                                                  T, pos0, H, D, cap, nullptr);
    STAC_CUDA_LAUNCHED("kv_append_kernel");
}

namespace {
__global__ void rmsnorm_kernel(float* out, const float* x, const float* g, int64_t C, float eps) {
    __shared__ float red[32];
    const float* xr = x + int64_t(blockIdx.x) * C;
    float* o = out + int64_t(blockIdx.x) * C;
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += xr[c] * xr[c];
    const float inv = 1.0f / sqrtf(block_sum(s, red) / float(C) + eps);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = g[c] * (xr[c] * inv);
}

__global__ void silu_gate_kernel(float* out, const float* gu, int64_t T, int64_t I) {
    STAC_GRID_LOOP(i, T * I) {
        const int64_t t = i / I, j = i % I;
        out[i] = stac::silu_gate(gu[t * 2 * I + j], gu[t * 2 * I + I + j]);
    }
}

// cs: [T, D/2, 2] = (cos, sin) of each row's angles, computed on the host as the CPU computes them.
__global__ void rope_kernel(float* x, int64_t ldx, int64_t T, int64_t nh, int64_t D, const float* cs) {
    const int64_t half = D / 2;
    STAC_GRID_LOOP(k, T * nh * half) {
        const int64_t t = k / (nh * half), h = (k / half) % nh, i = k % half;
        float* r = x + t * ldx + h * D;
        rope_rotate(r[i], r[half + i], cs[(t * half + i) * 2], cs[(t * half + i) * 2 + 1]);
    }
}
}  // namespace

void rmsnorm(int dev, float* out, const float* x, const float* g, int64_t T, int64_t C, float eps) {
    if (T == 0) return;
    rmsnorm_kernel<<<unsigned(T), kNormThreads, 0, cuda_stream(dev)>>>(out, x, g, C, eps);
    STAC_CUDA_LAUNCHED("rmsnorm_kernel");
}

void silu_gate(int dev, float* out, const float* gu, int64_t T, int64_t I) {
    if (T * I == 0) return;
    silu_gate_kernel<<<blocks_for(T * I), kThreads, 0, cuda_stream(dev)>>>(out, gu, T, I);
    STAC_CUDA_LAUNCHED("silu_gate_kernel");
}

void rope(int dev, float* x, int64_t ldx, int64_t T, int64_t nh, int64_t D, const float* host_cs) {
    if (T == 0) return;
    const int64_t n = T * (D / 2) * 2;
    Tensor cs = temp(n, DType::F32, dev);
    copy_bytes(cs.raw(), Device::cuda(dev), host_cs, Device::cpu(), size_t(n) * sizeof(float));
    rope_kernel<<<blocks_for(T * nh * (D / 2)), kThreads, 0, cuda_stream(dev)>>>(x, ldx, T, nh, D, cs.raw_data<float>());
    STAC_CUDA_LAUNCHED("rope_kernel");
}

namespace {
// One thread per element of qkv's row t: q columns [0, Cq), then k and v columns of width Ckv.
__global__ void split_qkv_kernel(float* q, float* k, float* v, const float* qkv, int64_t T, int64_t Cq, int64_t Ckv) {
    const int64_t W = Cq + 2 * Ckv;
    STAC_GRID_LOOP(i, T * W) {
        const int64_t t = i / W, c = i % W;
        const float x = qkv[i];
        if (c < Cq) q[t * Cq + c] = x;
        else if (c < Cq + Ckv) k[t * Ckv + c - Cq] = x;
        else v[t * Ckv + c - Cq - Ckv] = x;
    }
}
}  // namespace

void split_qkv(int dev, float* q, float* k, float* v, const float* qkv, int64_t T, int64_t Cq, int64_t Ckv) {
    const int64_t n = T * (Cq + 2 * Ckv);
    if (n == 0) return;
    split_qkv_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(q, k, v, qkv, T, Cq, Ckv);
    STAC_CUDA_LAUNCHED("split_qkv_kernel");
}

void kv_append_counts(int dev, int8_t* kc, int8_t* vc, const int8_t* nk, const int8_t* nv, int64_t T, int64_t pos0,
                      int64_t H, int64_t D, int64_t cap) {
    if (T == 0) return;
    // The count caches have the same layout; nk and nv are separate [T, C] arrays (ld = C).
    const int64_t C = H * D;
    kv_append_kernel<int8_t><<<blocks_for(T * C), kThreads, 0, cuda_stream(dev)>>>(kc, vc, nk, nv, C, T, pos0, H, D, cap,
                                                                                   nullptr);
    STAC_CUDA_LAUNCHED("kv_append_counts_kernel");
}

void top_k(int dev, float* values, int32_t* indices, const float* logits, int64_t R, int64_t V, int k) {
    if (R == 0 || k == 0) return;
    top_k_kernel<<<unsigned(R), kTopKThreads, 0, cuda_stream(dev)>>>(values, indices, logits, V, k);
    STAC_CUDA_LAUNCHED("top_k_kernel");
}

}  // namespace stac::cuda
