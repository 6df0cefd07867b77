// Shared pieces of the CUDA kernels (private to kernels/cuda): launch shapes, warp and block
// reductions, weight loads in f32/f16/bf16, the per-device cuBLAS handle, pool temporaries.
#pragma once

#include <cuda_runtime.h>
#include <cublas_v2.h>

#include <cstdint>

#include "core/cuda_runtime.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace stac::cuda {

void cublas_check(cublasStatus_t st, const char* what, const char* file, int line);
#define STAC_CUBLAS_CHECK(call) ::stac::cuda::cublas_check((call), #call, __FILE__, __LINE__)

// The cuBLAS handle of `device`, bound to its stream (created on first use).
cublasHandle_t cublas(int device);

// A temporary on `device` from the caching pool (no cudaMalloc once the pool holds the size).
inline Tensor temp(int64_t n, DType dt, int device) { return Tensor::empty({n}, dt, Device::cuda(device)); }

// Reads an int64 counter on the device (waits for the stream).
int64_t read_counter(const int64_t* dev_counter, int device);

constexpr int kThreads = 256;
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
    const int64_t b = (n + threads - 1) / threads;
    return unsigned(b < 1 ? 1 : (b > 65535LL * 32 ? 65535LL * 32 : b));
}

// Grid-stride loop over [0, n).
#define STAC_GRID_LOOP(i, n) \
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ long long warp_sum_ll(long long v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 floats; the call contains __syncthreads, so all threads must reach it.
__device__ __forceinline__ float block_sum(float v, float* shared) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // `shared` may still be read by a previous call
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float t = lane < nw ? shared[lane] : 0.0f;
    return warp_sum(t);
}

// Adds a per-thread count to a device counter with one atomic per warp.
__device__ __forceinline__ void count_events(long long* counter, long long mine) {
    const long long w = warp_sum_ll(mine);
    if ((threadIdx.x & 31) == 0 && w) atomicAdd(reinterpret_cast<unsigned long long*>(counter), (unsigned long long)w);
}

// A weight element as f32, whatever its storage (f16/bf16 converted exactly as on the CPU).
template <typename W> __device__ __forceinline__ float load_w(const W* p, int64_t i);
template <> __device__ __forceinline__ float load_w<float>(const float* p, int64_t i) { return p[i]; }
struct F16 { uint16_t bits; };
struct BF16 { uint16_t bits; };
template <> __device__ __forceinline__ float load_w<F16>(const F16* p, int64_t i) { return f16_to_f32(p[i].bits); }
template <> __device__ __forceinline__ float load_w<BF16>(const BF16* p, int64_t i) { return bf16_to_f32(p[i].bits); }

// Calls f(tag) with a null pointer of the weight storage type for `dt` (F32, F16 or BF16).
template <typename F> void with_weight_type(DType dt, F&& f) {
    switch (dt) {
        case DType::F32: f(static_cast<const float*>(nullptr)); return;
        case DType::F16: f(static_cast<const F16*>(nullptr)); return;
        case DType::BF16: f(static_cast<const BF16*>(nullptr)); return;
        default: throw Error(std::string("CUDA kernels: weights of dtype ") + std::string(dtype_name(dt)) +
                             " are not supported (F32, F16, BF16)");
    }
}

}  // namespace stac::cuda

namespace stac::cuda {
// Row-major C[M, N] = A[M, K] · B[K, N] in f64 (cuBLAS DGEMM): exact for the integer-valued
// products of the spiking linear layers.
void gemm_f64(int dev, double* c, const double* a, const double* b, int64_t M, int64_t K, int64_t N);
}  // namespace stac::cuda
