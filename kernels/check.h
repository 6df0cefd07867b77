// Operand checks shared by the kernel dispatch layers: dtype, shape, one device (internal header).
#pragma once

#include <initializer_list>

#include "core/tensor.h"

namespace stac::kernels::detail {

inline void need(const Tensor& t, DType dt, const char* op, const char* what) {
    if (!t.defined()) fail("{}: {} is undefined", op, what);
    if (t.dtype() != dt) fail("{}: {} is {}, expected {}", op, what, t.describe(), dtype_name(dt));
}

inline void need_shape(const Tensor& t, const Shape& s, const char* op, const char* what) {
    if (!(t.shape() == s)) fail("{}: {} has shape {}, expected {}", op, what, t.shape().str(), s.str());
}

// Whether kernels/cuda is compiled in. Dispatch writes `if constexpr (kCuda) if (d.is_cuda()) ...`:
// in a CPU-only build the CUDA call is a discarded statement and needs no definition (a CUDA
// tensor cannot exist there: allocating one throws).
#ifdef STAC_WITH_CUDA
inline constexpr bool kCuda = true;
#else
inline constexpr bool kCuda = false;
#endif

// All defined operands on one device; returns it.
inline Device same_device(const char* op, std::initializer_list<const Tensor*> ts) {
    Device d = (*ts.begin())->device();
    for (const Tensor* t : ts)
        if (t->defined() && t->device() != d)
            fail("{}: operands on different devices ({} and {})", op, d.str(), t->device().str());
    return d;
}

// A weight matrix: F32 anywhere, F16 or BF16 on a GPU (the CPU computes from f32 weights).
inline void need_weight(const Tensor& t, const char* op, const char* what) {
    if (!t.defined()) fail("{}: {} is undefined", op, what);
    const DType dt = t.dtype();
    if (dt == DType::F32 || (t.device().is_cuda() && (dt == DType::F16 || dt == DType::BF16))) return;
    fail("{}: {} is {}, expected F32{}", op, what, t.describe(), t.device().is_cuda() ? ", F16 or BF16" : "");
}

}  // namespace stac::kernels::detail
