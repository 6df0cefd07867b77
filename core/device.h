// Device: where a tensor's bytes live (the host, or one CUDA GPU), and the backend hooks for CUDA memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
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
// Throws stac::Error with the reason when `d` is a CUDA device that is not compiled in, not
// present, or cannot be used (busy in exclusive-process mode, driver too old): the first use of a
// GPU creates its context here, so a busy GPU is reported by name, not by the first kernel.
void require_device(Device d);
// "NVIDIA H200, 139 GiB, sm_90" (or "cpu").
std::string device_description(Device d);

// Device memory comes from a caching pool: cuda_malloc reuses a freed block of the same size class
// before it calls cudaMalloc, so a loop that frees and re-allocates the same shapes (the decode
// step) never reaches cudaMalloc. allocation_count() counts only the real cudaMalloc calls.
void* cuda_malloc(size_t bytes, int device);
void cuda_free(void* p, int device) noexcept;  // back to the pool (stream-ordered: one stream per device)
// Bytes held by the pool of `device`: in use and cached for reuse.
struct CudaPoolStats {
    size_t in_use = 0, cached = 0;
    uint64_t device_mallocs = 0;
};
CudaPoolStats cuda_pool_stats(int device);
// Returns the cached blocks of `device` to the driver (an allocation that fails does this and retries).
void cuda_release_cached(int device);

// Copies between any two places; kinds say which side is the host. Copies run on the device's
// stream; a copy that ends on the host waits for it, so the host sees finished results. Large
// host-to-device copies go through pinned staging buffers (the weight upload).
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
// Sets `bytes` bytes at `dst` to zero (stream-ordered on a GPU).
void zero_bytes(void* dst, Device dev, size_t bytes);
// Waits until the device's stream has finished everything queued on it (no-op on the CPU); turns
// an asynchronous kernel failure into a stac::Error.
void synchronize(Device d);

// CUDA Graphs: the work queued on a device's stream between begin_capture and end_capture is
// recorded instead of run, and launch() replays it with one call (the decode step: ~100 kernel
// launches become one). Device memory allocated while recording stays reserved for the graph
// until the graph is destroyed, so a replay never touches a block someone else now owns. Work
// recorded must not depend on host values that change between replays (pass them in device
// memory) and must not copy from pageable host memory.
class DeviceGraph {
public:
    DeviceGraph() = default;
    static void begin_capture(Device d);
    // Ends the recording and instantiates it; on failure the recording is dropped and stac::Error thrown.
    static DeviceGraph end_capture(Device d);
    // Ends a recording after an error (nothing is kept); safe to call when none is active.
    static void abort_capture(Device d) noexcept;
    void launch() const;  // one replay, queued on the device's stream
    bool valid() const { return impl_ != nullptr; }
    void reset() { impl_.reset(); }

private:
    std::shared_ptr<void> impl_;
};

}  // namespace stac
