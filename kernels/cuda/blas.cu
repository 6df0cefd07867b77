// cuBLAS for the GEMMs (linear layers, the LM head, the f64 spiking GEMMs) and the fused bias +
// activation pass after them. cuBLAS is the right tool here: hand-written GEMMs would not beat it,
// and the bias/activation pass costs one read and write of out.
// Row-major trick: a row-major [M, N] matrix is a column-major [N, M] one, so out = x · w is
// computed as out^T = w^T · x^T with no transposes.
#include <cublas_v2.h>

#include <mutex>
#include <string>

#include "core/device.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace stac::cuda {

void cublas_check(cublasStatus_t st, const char* what, const char* file, int line) {
    if (st == CUBLAS_STATUS_SUCCESS) return;
    const char* base = std::strrchr(file, '/');
    throw Error(std::string("cuBLAS error in ") + what + " (" + (base ? base + 1 : file) + ":" + std::to_string(line) +
                "): " + cublasGetStatusName(st) + " (" + cublasGetStatusString(st) + ")");
}

cublasHandle_t cublas(int device) {
    static std::mutex mu;
    static cublasHandle_t handles[64] = {};
    if (device < 0 || device >= 64) throw Error("cuBLAS: device index " + std::to_string(device) + " out of range");
    cudaStream_t s = cuda_stream(device);  // also checks the device and makes it current
    std::lock_guard<std::mutex> lock(mu);
    if (!handles[device]) {
        STAC_CUBLAS_CHECK(cublasCreate(&handles[device]));
        STAC_CUBLAS_CHECK(cublasSetStream(handles[device], s));
        // f32 GEMMs stay f32 (no TF32): the f32 path is the one that must match the CPU closely.
        STAC_CUBLAS_CHECK(cublasSetMathMode(handles[device], CUBLAS_DEFAULT_MATH));
    }
    return handles[device];
}

int64_t read_counter(const int64_t* dev_counter, int device) {
    int64_t v = 0;
    copy_bytes(&v, Device::cpu(), dev_counter, Device::cuda(device), sizeof(v));
    return v;
}

namespace {

__global__ void bias_act_kernel(float* out, const float* b, int64_t T, int64_t N, bool apply_act, Activation act) {
    STAC_GRID_LOOP(i, T * N) {
        float v = out[i];
        if (b) v += b[i % N];
        if (apply_act) v = activate(act, v);
        out[i] = v;
    }
}

__global__ void round_to_kernel(uint16_t* dst, const float* src, int64_t n, bool bf16) {
    STAC_GRID_LOOP(i, n) dst[i] = bf16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
}

cudaDataType_t cuda_type(DType dt) {
    switch (dt) {
        case DType::F32: return CUDA_R_32F;
        case DType::F16: return CUDA_R_16F;
        case DType::BF16: return CUDA_R_16BF;
        default: throw Error(std::string("cuBLAS: weights of dtype ") + std::string(dtype_name(dt)) + " are not supported");
    }
}

// Row-major out[M, N] (f32) = x[M, K] (f32) · W, where W is w[K, N] (trans_w false) or w[N, K]^T
// (trans_w true) of dtype wdt. Reduced-precision weights: x is rounded to wdt and the GEMM runs on
// tensor cores with f32 accumulation.
void gemm(int dev, float* out, const float* x, const void* w, DType wdt, int64_t M, int64_t K, int64_t N, bool trans_w) {
    cublasHandle_t h = cublas(dev);
    const float one = 1.0f, zero = 0.0f;
    const cublasOperation_t opw = trans_w ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int64_t ldw = trans_w ? K : N;
    if (M == 0 || N == 0) return;
    if (wdt == DType::F32) {
        STAC_CUBLAS_CHECK(cublasSgemm(h, opw, CUBLAS_OP_N, int(N), int(M), int(K), &one, static_cast<const float*>(w),
                                      int(ldw), x, int(K), &zero, out, int(N)));
        return;
    }
    Tensor xr = temp(M * K, wdt, dev);
    round_to_kernel<<<blocks_for(M * K), kThreads, 0, cuda_stream(dev)>>>(xr.raw_data<uint16_t>(), x, M * K,
                                                                        wdt == DType::BF16);
    STAC_CUDA_LAUNCHED("round_to_kernel");
    const cudaDataType_t t = cuda_type(wdt);
    STAC_CUBLAS_CHECK(cublasGemmEx(h, opw, CUBLAS_OP_N, int(N), int(M), int(K), &one, w, t, int(ldw), xr.raw(), t,
                                   int(K), &zero, out, CUDA_R_32F, int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

void linear(int dev, float* out, const float* x, const void* w, DType wdt, const float* b, int64_t T, int64_t K,
            int64_t N, bool apply_act, Activation act) {
    gemm(dev, out, x, w, wdt, T, K, N, false);
    if (!b && !apply_act) return;
    bias_act_kernel<<<blocks_for(T * N), kThreads, 0, cuda_stream(dev)>>>(out, b, T, N, apply_act, act);
    STAC_CUDA_LAUNCHED("bias_act_kernel");
}

void matmul_nt(int dev, float* out, const float* x, const void* e, DType edt, int64_t T, int64_t C, int64_t V) {
    gemm(dev, out, x, e, edt, T, C, V, true);
}

void gemm_f64(int dev, double* c, const double* a, const double* b, int64_t M, int64_t K, int64_t N) {
    if (M == 0 || N == 0) return;
    const double one = 1.0, zero = 0.0;
    STAC_CUBLAS_CHECK(cublasDgemm(cublas(dev), CUBLAS_OP_N, CUBLAS_OP_N, int(N), int(M), int(K), &one, b, int(N), a,
                                  int(K), &zero, c, int(N)));
}

}  // namespace stac::cuda
