// Causal attention on the GPU, reading K and V from the cache [H, cap, D] (so prompt processing and
// decode share one layout and the new tokens' K, V are appended first).
//   prefill: tiled, online softmax (kernels/math.h); a block holds 16 queries of one head and
//            streams 32-key tiles of K and V through shared memory; no [T, L] matrix is stored.
//   decode:  the cache is split into chunks of 128 keys, one block per (head, query, chunk), each
//            leaving (m, l, unnormalised sum) for a combine kernel: long contexts fill the GPU
//            even with one query and 12 heads.
// The explicit-step kernels (scores, causal softmax, probs · V) serve the spiking model.
// Letters: T queries, P cached keys, L = P + T, H heads, D head dim (<= 128), cap cache rows.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace stac::cuda {

namespace {

constexpr int kMaxD = int(kMaxHeadDim);
constexpr int kDPerLane = kMaxD / 32;  // output dims a lane owns: d = lane + 32 i

// ---- prefill

constexpr int kPWarps = 4, kPQPerWarp = 4, kPQueries = kPWarps * kPQPerWarp, kKeyTile = 32;

__global__ void __launch_bounds__(kPWarps * 32) attention_prefill_kernel(
    float* out, int64_t ldo, const float* q, int64_t ldq, const float* kc, const float* vc, int T, int P, int D,
    int cap, float scale, int group) {
    __shared__ float Ks[kKeyTile][kMaxD + 1];  // +1: lane j reads row j without bank conflicts
    __shared__ float Vs[kKeyTile][kMaxD];
    __shared__ float Qs[kPQueries][kMaxD];
    const int h = blockIdx.y, q0 = blockIdx.x * kPQueries;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int H = gridDim.y;
    for (int i = threadIdx.x; i < kPQueries * D; i += blockDim.x) {
        const int r = i / D, d = i % D, t = q0 + r;
        Qs[r][d] = t < T ? q[int64_t(t) * ldq + int64_t(h) * D + d] : 0.0f;
    }
    SoftmaxRunning st[kPQPerWarp];
    float acc[kPQPerWarp][kDPerLane];
#pragma unroll
    for (int a = 0; a < kPQPerWarp; ++a)
#pragma unroll
        for (int i = 0; i < kDPerLane; ++i) acc[a][i] = 0.0f;

    const int t_last = min(q0 + kPQueries, T) - 1;
    const int keys = P + t_last + 1;  // keys the block's last query sees
    const float* kh = kc + int64_t(h / group) * cap * D;
    const float* vh = vc + int64_t(h / group) * cap * D;
    for (int k0 = 0; k0 < keys; k0 += kKeyTile) {
        __syncthreads();  // the previous tile is no longer read (and Qs is written, first time)
        for (int i = threadIdx.x; i < kKeyTile * D; i += blockDim.x) {
            const int j = i / D, d = i % D;
            const bool in = k0 + j < keys;
            Ks[j][d] = in ? kh[int64_t(k0 + j) * D + d] : 0.0f;
            Vs[j][d] = in ? vh[int64_t(k0 + j) * D + d] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int a = 0; a < kPQPerWarp; ++a) {
            const int r = warp * kPQPerWarp + a, t = q0 + r;
            if (t >= T) continue;  // warp-uniform
            const int j = k0 + lane;
            const bool valid = j <= P + t;
            float s = -INFINITY;
            if (valid) {
                float dot = 0.0f;
                for (int d = 0; d < D; ++d) dot += Qs[r][d] * Ks[lane][d];
                s = dot * scale;
            }
            const float m_new = fmaxf(st[a].m, warp_max(s));
            if (m_new == -INFINITY) continue;  // no visible key in this tile (warp-uniform)
            const float corr = softmax_rescale(st[a].m, m_new);
            const float p = valid ? expf(s - m_new) : 0.0f;
            st[a].l = st[a].l * corr + warp_sum(p);
            st[a].m = m_new;
#pragma unroll
            for (int i = 0; i < kDPerLane; ++i) acc[a][i] *= corr;
            for (int jj = 0; jj < kKeyTile; ++jj) {
                const float pj = __shfl_sync(0xffffffffu, p, jj);
                if (pj == 0.0f) continue;  // warp-uniform: masked or underflowed key
#pragma unroll
                for (int i = 0; i < kDPerLane; ++i) {
                    const int d = lane + 32 * i;
                    if (d < D) acc[a][i] += pj * Vs[jj][d];
                }
            }
        }
    }
#pragma unroll
    for (int a = 0; a < kPQPerWarp; ++a) {
        const int t = q0 + warp * kPQPerWarp + a;
        if (t >= T) continue;
        const float inv = 1.0f / st[a].l;
#pragma unroll
        for (int i = 0; i < kDPerLane; ++i) {
            const int d = lane + 32 * i;
            if (d < D) out[int64_t(t) * ldo + int64_t(h) * D + d] = acc[a][i] * inv;
        }
    }
    (void)H;
}

// ---- decode: split along the cache

constexpr int kDWarps = 4, kChunk = kDWarps * 32;  // keys per block: one per thread

// part: [T, H, splits, D + 2] = (m, l, sum_j exp(s_j - m) v_j)
// pos_at: if not null, P is read from it (a CUDA graph's decode step; T = 1).
__global__ void __launch_bounds__(kDWarps * 32) attention_split_kernel(
    float* part, const float* q, int64_t ldq, const float* kc, const float* vc, int P, int D, int cap, float scale,
    int splits, const int32_t* pos_at, int group) {
    if (pos_at) P = *pos_at;
    __shared__ float qs[kMaxD];
    __shared__ float wm[kDWarps], wl[kDWarps];
    __shared__ float wacc[kDWarps][kMaxD];
    const int h = blockIdx.x, t = blockIdx.y, z = blockIdx.z, H = gridDim.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = q[int64_t(t) * ldq + int64_t(h) * D + d];
    __syncthreads();
    const int len = P + t + 1;  // keys visible to query t
    const int j = z * kChunk + warp * 32 + lane;
    const bool valid = j < len;
    const float* kh = kc + int64_t(h / group) * cap * D;
    const float* vh = vc + int64_t(h / group) * cap * D;
    float s = -INFINITY;
    if (valid) {
        const float* kr = kh + int64_t(j) * D;
        float dot = 0.0f;
        for (int d = 0; d < D; ++d) dot += qs[d] * kr[d];
        s = dot * scale;
    }
    const float m = warp_max(s);
    const float p = valid ? expf(s - m) : 0.0f;
    const float l = warp_sum(p);
    float acc[kDPerLane];
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) acc[i] = 0.0f;
    if (m != -INFINITY) {
        const int j0 = z * kChunk + warp * 32;
        for (int jj = 0; jj < 32; ++jj) {
            const float pj = __shfl_sync(0xffffffffu, p, jj);
            if (pj == 0.0f) continue;
            const float* vr = vh + int64_t(j0 + jj) * D;
#pragma unroll
            for (int i = 0; i < kDPerLane; ++i) {
                const int d = lane + 32 * i;
                if (d < D) acc[i] += pj * vr[d];
            }
        }
    }
    if (lane == 0) wm[warp] = m, wl[warp] = l;
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < D) wacc[warp][d] = acc[i];
    }
    __syncthreads();
    // Merge the warps' partial states into this block's (m, l, acc).
    SoftmaxRunning all;
    float f[kDWarps];
    for (int w = 0; w < kDWarps; ++w) {
        float fa, fb;
        softmax_merge(all, SoftmaxRunning{wm[w], wl[w]}, &fa, &fb);
        for (int u = 0; u < w; ++u) f[u] *= fa;
        f[w] = fb;
    }
    float* dst = part + ((int64_t(t) * H + h) * splits + z) * (D + 2);
    if (threadIdx.x == 0) dst[0] = all.m, dst[1] = all.l;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < kDWarps; ++w)
            if (f[w] != 0.0f) v += f[w] * wacc[w][d];
        dst[2 + d] = v;
    }
}

__global__ void attention_combine_kernel(float* out, int64_t ldo, const float* part, int D, int splits) {
    const int h = blockIdx.x, t = blockIdx.y, H = gridDim.x;
    const float* src = part + (int64_t(t) * H + h) * splits * (D + 2);
    SoftmaxRunning all;
    // Pass 1: the common maximum and denominator.
    for (int z = 0; z < splits; ++z) {
        float fa, fb;
        softmax_merge(all, SoftmaxRunning{src[z * (D + 2)], src[z * (D + 2) + 1]}, &fa, &fb);
    }
    const float inv = 1.0f / all.l;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = 0.0f;
        for (int z = 0; z < splits; ++z) {
            const float f = softmax_rescale(src[z * (D + 2)], all.m);
            if (f != 0.0f) v += f * src[z * (D + 2) + 2 + d];
        }
        out[int64_t(t) * ldo + int64_t(h) * D + d] = v * inv;
    }
}

// ---- explicit steps

__global__ void scores_kernel(float* scores, const float* q, int64_t ldq, const float* kc, int64_t T, int64_t P,
                              int64_t H, int64_t D, int64_t cap, float scale, int64_t group) {
    const int64_t L = P + T;
    STAC_GRID_LOOP(i, H * T * L) {
        const int64_t j = i % L, t = (i / L) % T, h = i / (L * T);
        float s = 0.0f;
        if (j <= P + t) {
            const float* qr = q + t * ldq + h * D;
            const float* kr = kc + ((h / group) * cap + j) * D;
            float dot = 0.0f;
            for (int64_t d = 0; d < D; ++d) dot += qr[d] * kr[d];
            s = dot * scale;
        }
        scores[i] = s;
    }
}

__global__ void pv_kernel(float* out, int64_t ldo, const float* probs, const float* vc, int64_t T, int64_t P, int64_t H,
                          int64_t D, int64_t cap, int64_t group) {
    const int64_t L = P + T, C = H * D;
    STAC_GRID_LOOP(i, T * C) {
        const int64_t t = i / C, c = i % C, h = c / D, d = c % D;
        const float* pr = probs + (h * T + t) * L;
        float acc = 0.0f;
        for (int64_t j = 0; j < L; ++j) acc += pr[j] * vc[((h / group) * cap + j) * D + d];
        out[t * ldo + c] = acc;
    }
}

// One warp per row (h, t) of x: [H, T, L].
__global__ void softmax_causal_kernel(float* x, int64_t H, int64_t T, int64_t P) {
    const int64_t L = P + T;
    const int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= H * T) return;
    const int64_t t = row % T, len = P + t + 1;
    float* r = x + row * L;
    float m = -INFINITY;
    for (int64_t j = lane; j < len; j += 32) m = fmaxf(m, r[j]);
    m = warp_max(m);
    float s = 0.0f;
    for (int64_t j = lane; j < len; j += 32) {
        const float e = expf(r[j] - m);
        r[j] = e;
        s += e;
    }
    const float inv = 1.0f / warp_sum(s);
    for (int64_t j = lane; j < L; j += 32) r[j] = j < len ? r[j] * inv : 0.0f;
}

}  // namespace

void attention(int dev, float* out, int64_t ldo, const float* q, int64_t ldq, const float* kc, const float* vc,
               int64_t T, int64_t P, int64_t H, int64_t D, int64_t cap, float scale, AttentionKernel which,
               int64_t group) {
    if (group < 1 || H % group != 0)
        throw Error("CUDA attention: " + std::to_string(H) + " query heads do not group by " + std::to_string(group));
    if (T == 0) return;
    if (D > kMaxHeadDim)
        throw Error("CUDA attention: head dimension " + std::to_string(D) + " exceeds " + std::to_string(kMaxHeadDim));
    if (which == AttentionKernel::Auto) which = T == 1 ? AttentionKernel::Decode : AttentionKernel::Prefill;
    cudaStream_t s = cuda_stream(dev);
    if (which == AttentionKernel::Prefill) {
        const dim3 grid(unsigned((T + kPQueries - 1) / kPQueries), unsigned(H));
        attention_prefill_kernel<<<grid, kPWarps * 32, 0, s>>>(out, ldo, q, ldq, kc, vc, int(T), int(P), int(D),
                                                               int(cap), scale, int(group));
        STAC_CUDA_LAUNCHED("attention_prefill_kernel");
        return;
    }
    const int splits = int((P + T + kChunk - 1) / kChunk);
    Tensor part = temp(T * H * splits * (D + 2), DType::F32, dev);
    attention_split_kernel<<<dim3(unsigned(H), unsigned(T), unsigned(splits)), kDWarps * 32, 0, s>>>(
        part.raw_data<float>(), q, ldq, kc, vc, int(P), int(D), int(cap), scale, splits, nullptr, int(group));
    STAC_CUDA_LAUNCHED("attention_split_kernel");
    attention_combine_kernel<<<dim3(unsigned(H), unsigned(T)), 128, 0, s>>>(out, ldo, part.raw_data<float>(), int(D),
                                                                           splits);
    STAC_CUDA_LAUNCHED("attention_combine_kernel");
}

void attention_at(int dev, float* out, const float* q, const float* kc, const float* vc, const int32_t* step,
                  int64_t H, int64_t D, int64_t cap, float scale) {
    if (D > kMaxHeadDim)
        throw Error("CUDA attention: head dimension " + std::to_string(D) + " exceeds " + std::to_string(kMaxHeadDim));
    cudaStream_t s = cuda_stream(dev);
    const int splits = int((cap + kChunk - 1) / kChunk);
    const int64_t C = H * D;
    Tensor part = temp(H * splits * (D + 2), DType::F32, dev);
    attention_split_kernel<<<dim3(unsigned(H), 1, unsigned(splits)), kDWarps * 32, 0, s>>>(
        part.raw_data<float>(), q, 3 * C, kc, vc, 0, int(D), int(cap), scale, splits, step + 1, 1);
    STAC_CUDA_LAUNCHED("attention_split_kernel (graph step)");
    attention_combine_kernel<<<dim3(unsigned(H), 1), 128, 0, s>>>(out, C, part.raw_data<float>(), int(D), splits);
    STAC_CUDA_LAUNCHED("attention_combine_kernel (graph step)");
}

void attention_scores(int dev, float* scores, const float* q, int64_t ldq, const float* kc, int64_t T, int64_t P,
                      int64_t H, int64_t D, int64_t cap, float scale, int64_t group) {
    const int64_t n = H * T * (P + T);
    if (n == 0) return;
    scores_kernel<<<blocks_for(n), kThreads, 0, cuda_stream(dev)>>>(scores, q, ldq, kc, T, P, H, D, cap, scale, group);
    STAC_CUDA_LAUNCHED("scores_kernel");
}

void attention_pv(int dev, float* out, int64_t ldo, const float* probs, const float* vc, int64_t T, int64_t P,
                  int64_t H, int64_t D, int64_t cap, int64_t group) {
    if (T == 0) return;
    pv_kernel<<<blocks_for(T * H * D), kThreads, 0, cuda_stream(dev)>>>(out, ldo, probs, vc, T, P, H, D, cap, group);
    STAC_CUDA_LAUNCHED("pv_kernel");
}

void softmax_causal(int dev, float* x, int64_t H, int64_t T, int64_t P) {
    const int64_t rows = H * T;
    if (rows == 0) return;
    softmax_causal_kernel<<<unsigned((rows + 7) / 8), 256, 0, cuda_stream(dev)>>>(x, H, T, P);
    STAC_CUDA_LAUNCHED("softmax_causal_kernel");
}

}  // namespace stac::cuda
