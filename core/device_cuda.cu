// CUDA runtime hooks for core/device.h (built only with STAC_CUDA). Every CUDA call is checked.
#include <cuda_runtime.h>

#include <cstring>
#include <string>

#include "core/device.h"
#include "core/error.h"

namespace stac {
namespace detail { void count_allocation(); }

namespace {
void check(cudaError_t err, const char* what) {
    // fmt's compile-time format checks do not build under nvcc: compose the message by hand.
    if (err != cudaSuccess)
        throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err) + " (" +
                    std::to_string(static_cast<int>(err)) + ")");
}
}  // namespace

bool cuda_compiled() { return true; }

int cuda_device_count() {
    int n = 0;
    // No driver or no GPU is a normal answer here, not an error: report zero devices.
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error
        return 0;
    }
    return n;
}

void* cuda_malloc(size_t bytes, int device) {
    require_device(Device::cuda(device));
    check(cudaSetDevice(device), "cudaSetDevice");
    void* p = nullptr;
    check(cudaMalloc(&p, bytes == 0 ? 1 : bytes), "cudaMalloc");
    detail::count_allocation();
    return p;
}

void cuda_free(void* p, int device) noexcept {
    if (!p) return;
    cudaSetDevice(device);
    cudaFree(p);
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
    if (bytes == 0) return;
    if (dst_dev.is_cpu() && src_dev.is_cpu()) {
        std::memcpy(dst, src, bytes);
        return;
    }
    const cudaMemcpyKind kind = dst_dev.is_cpu()   ? cudaMemcpyDeviceToHost
                                : src_dev.is_cpu() ? cudaMemcpyHostToDevice
                                                   : cudaMemcpyDeviceToDevice;
    check(cudaMemcpy(dst, src, bytes, kind), "cudaMemcpy");
}

}  // namespace stac
