// Device: where a tensor's bytes live (the host, or one CUDA GPU), and the backend hooks for CUDA memory.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace stac {

enum class DeviceKind : uint8_t { CPU, CUDA };

struct Device {
    DeviceKind kind = DeviceKind::CPU;
    int index = 0;

    static constexpr Device cpu() { return {DeviceKind::CPU, 0}; }
    static constexpr Device cuda(int i = 0) { return {DeviceKind::CUDA, i}; }
    bool is_cpu() const { return kind == DeviceKind::CPU; }
    bool is_cuda() const { return kind == DeviceKind::CUDA; }
    bool operator==(const Device&) const = default;
    std::string str() const;  // "cpu", "cuda:0"

    // "cpu", "cuda", "cuda:N"; throws stac::Error naming the text otherwise. Does not check the GPU exists.
    static Device parse(std::string_view text);
};

// CUDA runtime hooks. Without a CUDA build, cuda_device_count() is 0 and the others throw stac::Error.
bool cuda_compiled();
int cuda_device_count();
// Throws stac::Error with the reason when `d` is a CUDA device that is not compiled in or not present.
void require_device(Device d);
void* cuda_malloc(size_t bytes, int device);
void cuda_free(void* p, int device) noexcept;
// Copies between any two places; kinds say which side is the host.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);

}  // namespace stac
