// CUDA-side helpers of core/ for .cu files only (needs cuda_runtime.h): error checks that name the
// call site, the per-device stream every stac kernel and copy runs on.
#pragma once

#include <cuda_runtime.h>

namespace stac {

// Throws stac::Error "CUDA error in <what> (<file>:<line>): <message> (<code>)" unless err is cudaSuccess.
void cuda_check(cudaError_t err, const char* what, const char* file, int line);

// The stream of `device` (created on first use, non-blocking); also makes `device` current.
cudaStream_t cuda_stream(int device);

}  // namespace stac

#define STAC_CUDA_CHECK(call) ::stac::cuda_check((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad configuration shows up here, an execution fault at the next sync.
#define STAC_CUDA_LAUNCHED(name) ::stac::cuda_check(cudaGetLastError(), name, __FILE__, __LINE__)
