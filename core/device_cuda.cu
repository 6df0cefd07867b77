// CUDA runtime hooks for core/device.h (built only with STAC_CUDA): a caching device allocator,
// one stream per device, pinned staging for uploads. Every CUDA call is checked.
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/cuda_runtime.h"
#include "core/device.h"
#include "core/error.h"

namespace stac {
namespace detail { void count_allocation(); }

void cuda_check(cudaError_t err, const char* what, const char* file, int line) {
    if (err == cudaSuccess) return;
    // fmt's compile-time format checks do not build under nvcc: compose the message by hand.
    const char* base = std::strrchr(file, '/');
    throw Error(std::string("CUDA error in ") + what + " (" + (base ? base + 1 : file) + ":" + std::to_string(line) +
                "): " + cudaGetErrorString(err) + " (" + std::to_string(static_cast<int>(err)) + ")");
}

namespace {

constexpr int kMaxDevices = 64;

// Size classes: 512-byte steps up to 1 MiB rounded to the next power of two, beyond that 2 MiB
// steps. A class wastes at most half a block for small buffers and 2 MiB for large ones, and the
// shapes of a decode loop map to the same classes every step.
size_t size_class(size_t bytes) {
    if (bytes == 0) bytes = 1;
    constexpr size_t kMiB = size_t(1) << 20;
    if (bytes <= kMiB) {
        size_t c = 512;
        while (c < bytes) c <<= 1;
        return c;
    }
    return (bytes + 2 * kMiB - 1) / (2 * kMiB) * (2 * kMiB);
}

struct Pool {
    std::mutex mu;
    std::map<size_t, std::vector<void*>> free_blocks;  // size class -> cached blocks
    std::map<void*, size_t> live;                      // block -> size class
    size_t in_use = 0, cached = 0;
    uint64_t mallocs = 0;
    // Set once, then read on every launch without the lock.
    std::atomic<bool> context_ready{false};
    std::atomic<cudaStream_t> stream{nullptr};
    // Pinned staging for host-to-device uploads: two buffers, so the CPU fills one while the other copies.
    std::array<void*, 2> staging{};
    std::array<cudaEvent_t, 2> staged{};
    // Graph recording: blocks handed out while recording belong to the graph until it is
    // destroyed (graph_refs); a block freed by its tensor meanwhile waits in `orphaned`.
    bool capturing = false;
    std::vector<void*>* capture_blocks = nullptr;
    std::map<void*, int> graph_refs;
    std::map<void*, size_t> orphaned;  // block -> size class
};

// Never destroyed: blocks may be returned by static destructors after main, when the runtime may be gone.
std::array<Pool, kMaxDevices>& pools() {
    static auto* p = new std::array<Pool, kMaxDevices>();
    return *p;
}

Pool& pool(int device) {
    if (device < 0 || device >= kMaxDevices) throw Error("CUDA device index " + std::to_string(device) + " out of range");
    return pools()[size_t(device)];
}

constexpr size_t kStagingBytes = size_t(8) << 20;

}  // namespace

bool cuda_compiled() { return true; }

int cuda_device_count() {
    int n = 0;
    // No driver or no GPU is a normal answer here, not an error: report zero devices.
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the error
        return 0;
    }
    return n;
}

void require_device(Device d) {
    if (d.is_cpu()) return;
    if (d.index >= 0 && d.index < kMaxDevices && pools()[size_t(d.index)].context_ready.load()) return;  // checked before
    const int n = cuda_device_count();
    if (n == 0) throw Error("device " + d.str() + ": no CUDA GPU is available (no device or no driver)");
    if (d.index >= n) throw Error("device " + d.str() + ": only " + std::to_string(n) + " CUDA GPU(s) present");
    Pool& p = pool(d.index);
    std::lock_guard<std::mutex> lock(p.mu);
    if (p.context_ready) return;
    // Create the context now: a GPU in exclusive-process mode held by another process, or one the
    // driver cannot use, fails here with its own message.
    cudaError_t err = cudaSetDevice(d.index);
    if (err == cudaSuccess) err = cudaFree(nullptr);
    if (err != cudaSuccess) {
        cudaGetLastError();
        throw Error("device " + d.str() + ": cannot be used: " + cudaGetErrorString(err) +
                    (err == cudaErrorDevicesUnavailable ? " (busy: another process holds it in exclusive mode)" : ""));
    }
    p.context_ready = true;
}

std::string device_description(Device d) {
    if (d.is_cpu()) return "cpu";
    require_device(d);
    cudaDeviceProp prop{};
    STAC_CUDA_CHECK(cudaGetDeviceProperties(&prop, d.index));
    return std::string(prop.name) + ", " + std::to_string(prop.totalGlobalMem >> 30) + " GiB, sm_" +
           std::to_string(prop.major) + std::to_string(prop.minor);
}

cudaStream_t cuda_stream(int device) {
    require_device(Device::cuda(device));
    Pool& p = pool(device);
    int current = -1;
    STAC_CUDA_CHECK(cudaGetDevice(&current));
    if (current != device) STAC_CUDA_CHECK(cudaSetDevice(device));
    if (cudaStream_t s = p.stream.load()) return s;
    std::lock_guard<std::mutex> lock(p.mu);
    if (!p.stream.load()) {
        cudaStream_t s = nullptr;
        STAC_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        p.stream.store(s);
    }
    return p.stream.load();
}

void* cuda_malloc(size_t bytes, int device) {
    require_device(Device::cuda(device));
    const size_t cls = size_class(bytes);
    Pool& p = pool(device);
    {
        std::lock_guard<std::mutex> lock(p.mu);
        auto it = p.free_blocks.find(cls);
        if (it != p.free_blocks.end() && !it->second.empty()) {
            void* ptr = it->second.back();
            it->second.pop_back();
            p.live[ptr] = cls;
            p.cached -= cls;
            p.in_use += cls;
            if (p.capturing) p.capture_blocks->push_back(ptr), ++p.graph_refs[ptr];
            return ptr;
        }
    }
    STAC_CUDA_CHECK(cudaSetDevice(device));
    void* ptr = nullptr;
    cudaError_t err = cudaMalloc(&ptr, cls);
    if (err == cudaErrorMemoryAllocation) {  // give the cached blocks back and try once more
        cudaGetLastError();
        cuda_release_cached(device);
        err = cudaMalloc(&ptr, cls);
    }
    if (err != cudaSuccess) {
        cudaGetLastError();
        throw Error("device cuda:" + std::to_string(device) + ": cannot allocate " + std::to_string(bytes) +
                    " bytes: " + cudaGetErrorString(err));
    }
    detail::count_allocation();
    std::lock_guard<std::mutex> lock(p.mu);
    p.live[ptr] = cls;
    p.in_use += cls;
    ++p.mallocs;
    if (p.capturing) p.capture_blocks->push_back(ptr), ++p.graph_refs[ptr];
    return ptr;
}

void cuda_free(void* ptr, int device) noexcept {
    if (!ptr || device < 0 || device >= kMaxDevices) return;
    Pool& p = pools()[size_t(device)];
    std::lock_guard<std::mutex> lock(p.mu);
    auto it = p.live.find(ptr);
    if (it == p.live.end()) return;  // not ours
    if (p.graph_refs.count(ptr)) {  // a graph still replays work on it: hand it back when the graph goes
        p.orphaned[ptr] = it->second;
        p.in_use -= it->second;
        p.live.erase(it);
        return;
    }
    // Stream-ordered reuse: all work on this device runs on its one stream, so a later kernel that
    // receives this block runs after every kernel that used it.
    p.free_blocks[it->second].push_back(ptr);
    p.cached += it->second;
    p.in_use -= it->second;
    p.live.erase(it);
}

CudaPoolStats cuda_pool_stats(int device) {
    Pool& p = pool(device);
    std::lock_guard<std::mutex> lock(p.mu);
    return {p.in_use, p.cached, p.mallocs};
}

void cuda_release_cached(int device) {
    Pool& p = pool(device);
    if (cudaStream_t s = p.stream.load()) cudaStreamSynchronize(s);  // blocks may still be in use by queued work
    std::lock_guard<std::mutex> lock(p.mu);
    cudaSetDevice(device);
    for (auto& [cls, blocks] : p.free_blocks)
        for (void* b : blocks) cudaFree(b);
    p.free_blocks.clear();
    p.cached = 0;
}

namespace {

struct GraphImpl {
    int device = 0;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    std::vector<void*> blocks;  // pool blocks the recorded work uses
    ~GraphImpl() {
        if (exec) cudaGraphExecDestroy(exec);
        if (graph) cudaGraphDestroy(graph);
        release_blocks(device, blocks);
    }
    static void release_blocks(int device, const std::vector<void*>& blocks) {
        Pool& p = pools()[size_t(device)];
        if (cudaStream_t s = p.stream.load()) cudaStreamSynchronize(s);  // no replay is still running
        std::lock_guard<std::mutex> lock(p.mu);
        for (void* b : blocks) {
            auto r = p.graph_refs.find(b);
            if (r == p.graph_refs.end() || --r->second > 0) continue;
            p.graph_refs.erase(r);
            if (auto o = p.orphaned.find(b); o != p.orphaned.end()) {
                p.free_blocks[o->second].push_back(b);
                p.cached += o->second;
                p.orphaned.erase(o);
            }
        }
    }
};

std::vector<void*>& capture_list(int device) {
    static auto* lists = new std::array<std::vector<void*>, kMaxDevices>();
    return (*lists)[size_t(device)];
}

}  // namespace

void DeviceGraph::begin_capture(Device d) {
    if (!d.is_cuda()) throw Error("CUDA graphs: nothing to record on the CPU");
    cudaStream_t s = cuda_stream(d.index);
    Pool& p = pool(d.index);
    {
        std::lock_guard<std::mutex> lock(p.mu);
        if (p.capturing) throw Error("CUDA graphs: device " + d.str() + " is already recording");
        capture_list(d.index).clear();
        p.capture_blocks = &capture_list(d.index);
        p.capturing = true;
    }
    // Relaxed: the pool may call cudaMalloc while recording (a block reserved for the graph).
    const cudaError_t err = cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed);
    if (err != cudaSuccess) {
        std::lock_guard<std::mutex> lock(p.mu);
        p.capturing = false;
        cuda_check(err, "cudaStreamBeginCapture", __FILE__, __LINE__);
    }
}

DeviceGraph DeviceGraph::end_capture(Device d) {
    if (!d.is_cuda()) throw Error("CUDA graphs: nothing to record on the CPU");
    cudaStream_t s = cuda_stream(d.index);
    Pool& p = pool(d.index);
    auto impl = std::make_shared<GraphImpl>();
    impl->device = d.index;
    {
        std::lock_guard<std::mutex> lock(p.mu);
        impl->blocks = capture_list(d.index);  // the impl now releases them, whatever happens next
        p.capturing = false;
        p.capture_blocks = nullptr;
    }
    STAC_CUDA_CHECK(cudaStreamEndCapture(s, &impl->graph));
    STAC_CUDA_CHECK(cudaGraphInstantiate(&impl->exec, impl->graph, 0));
    DeviceGraph g;
    g.impl_ = impl;
    return g;
}

void DeviceGraph::abort_capture(Device d) noexcept {
    if (!d.is_cuda() || d.index < 0 || d.index >= kMaxDevices) return;
    Pool& p = pools()[size_t(d.index)];
    std::vector<void*> blocks;
    {
        std::lock_guard<std::mutex> lock(p.mu);
        if (!p.capturing) return;
        blocks = capture_list(d.index);
        p.capturing = false;
        p.capture_blocks = nullptr;
    }
    if (cudaStream_t s = p.stream.load()) {
        cudaGraph_t g = nullptr;
        if (cudaStreamEndCapture(s, &g) == cudaSuccess && g) cudaGraphDestroy(g);
    }
    cudaGetLastError();
    GraphImpl::release_blocks(d.index, blocks);
}

void DeviceGraph::launch() const {
    if (!impl_) throw Error("CUDA graphs: launch of an empty graph");
    auto* g = static_cast<GraphImpl*>(impl_.get());
    STAC_CUDA_CHECK(cudaGraphLaunch(g->exec, cuda_stream(g->device)));
}

void synchronize(Device d) {
    if (d.is_cpu()) return;
    STAC_CUDA_CHECK(cudaStreamSynchronize(cuda_stream(d.index)));
}

void zero_bytes(void* dst, Device dev, size_t bytes) {
    if (bytes == 0) return;
    if (dev.is_cpu()) {
        std::memset(dst, 0, bytes);
        return;
    }
    STAC_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, cuda_stream(dev.index)));
}

namespace {

// Host -> device through two pinned buffers: memcpy a chunk into one while the other's DMA runs.
void upload_staged(void* dst, const void* src, size_t bytes, int device) {
    cudaStream_t s = cuda_stream(device);
    Pool& p = pool(device);
    {
        std::lock_guard<std::mutex> lock(p.mu);
        for (int i = 0; i < 2; ++i)
            if (!p.staging[size_t(i)]) {
                STAC_CUDA_CHECK(cudaMallocHost(&p.staging[size_t(i)], kStagingBytes));
                STAC_CUDA_CHECK(cudaEventCreateWithFlags(&p.staged[size_t(i)], cudaEventDisableTiming));
            }
    }
    const char* from = static_cast<const char*>(src);
    char* to = static_cast<char*>(dst);
    for (size_t off = 0, i = 0; off < bytes; off += kStagingBytes, i ^= 1) {
        const size_t n = std::min(kStagingBytes, bytes - off);
        STAC_CUDA_CHECK(cudaEventSynchronize(p.staged[i]));  // the buffer's previous copy is done
        std::memcpy(p.staging[i], from + off, n);
        STAC_CUDA_CHECK(cudaMemcpyAsync(to + off, p.staging[i], n, cudaMemcpyHostToDevice, s));
        STAC_CUDA_CHECK(cudaEventRecord(p.staged[i], s));
    }
    // The source may be freed when we return; the staging buffers are ours, so only wait for them
    // before they are reused (the event sync above), not here.
}

}  // namespace

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
    if (bytes == 0) return;
    if (dst_dev.is_cpu() && src_dev.is_cpu()) {
        std::memcpy(dst, src, bytes);
        return;
    }
    if (dst_dev.is_cpu()) {  // device -> host: the host reads the result right away
        cudaStream_t s = cuda_stream(src_dev.index);
        STAC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
        STAC_CUDA_CHECK(cudaStreamSynchronize(s));
        return;
    }
    if (src_dev.is_cpu()) {
        if (bytes >= (size_t(1) << 20)) {
            upload_staged(dst, src, bytes, dst_dev.index);
            return;
        }
        // Small pageable copies are staged by the driver before cudaMemcpyAsync returns, so the
        // caller may reuse `src` at once.
        STAC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_stream(dst_dev.index)));
        return;
    }
    if (src_dev.index == dst_dev.index) {
        STAC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream(dst_dev.index)));
        return;
    }
    // Between two GPUs: finish the source's work, then a peer copy on the destination's stream.
    STAC_CUDA_CHECK(cudaStreamSynchronize(cuda_stream(src_dev.index)));
    STAC_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_dev.index, src, src_dev.index, bytes, cuda_stream(dst_dev.index)));
}

}  // namespace stac
