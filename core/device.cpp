#include "core/device.h"

#include <charconv>
#include <cstring>

#include "core/error.h"

namespace stac {

std::string Device::str() const {
    return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index);
}

Device Device::parse(std::string_view text) {
    if (text == "cpu") return cpu();
    if (text == "cuda") return cuda(0);
    if (text.starts_with("cuda:")) {
        const std::string_view num = text.substr(5);
        int idx = -1;
        const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), idx);
        if (ec == std::errc() && end == num.data() + num.size() && idx >= 0) return cuda(idx);
    }
    fail("unknown device '{}': expected cpu, cuda or cuda:N", text);
}

#ifndef STAC_WITH_CUDA
namespace {
[[noreturn]] void no_cuda() { fail("this build of stac has no CUDA support (configure with -DSTAC_CUDA=ON)"); }
}  // namespace
bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
void* cuda_malloc(size_t, int) { no_cuda(); }
void cuda_free(void*, int) noexcept {}
CudaPoolStats cuda_pool_stats(int) { return {}; }
void cuda_release_cached(int) {}

void require_device(Device d) {
    if (d.is_cpu()) return;
    fail("device {}: this build of stac has no CUDA support (configure with -DSTAC_CUDA=ON)", d.str());
}

std::string device_description(Device d) {
    if (d.is_cpu()) return "cpu";
    require_device(d);
    return {};
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
    if (!dst_dev.is_cpu() || !src_dev.is_cpu()) require_device(dst_dev.is_cpu() ? src_dev : dst_dev);
    if (bytes) std::memcpy(dst, src, bytes);
}

void zero_bytes(void* dst, Device dev, size_t bytes) {
    require_device(dev);
    if (bytes) std::memset(dst, 0, bytes);
}

void synchronize(Device d) { require_device(d); }

void DeviceGraph::begin_capture(Device d) {
    require_device(d);
    if (d.is_cpu()) fail("CUDA graphs: nothing to record on the CPU");
}
DeviceGraph DeviceGraph::end_capture(Device d) {
    require_device(d);
    fail("CUDA graphs: no capture is active");
}
void DeviceGraph::abort_capture(Device) noexcept {}
void DeviceGraph::launch() const { fail("CUDA graphs: this build of stac has no CUDA support"); }
#endif

}  // namespace stac
