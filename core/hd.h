// STAC_HD: marks per-element math that both the CPU path and CUDA kernels compile (one copy of the math).
#pragma once

#if defined(__CUDACC__)
#define STAC_HD __host__ __device__ __forceinline__
#else
#define STAC_HD inline
#endif
