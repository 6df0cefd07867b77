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

// All defined operands on one device; returns it. CUDA kernels are not built yet: say so clearly.
inline Device same_device(const char* op, std::initializer_list<const Tensor*> ts) {
    Device d = (*ts.begin())->device();
    for (const Tensor* t : ts)
        if (t->defined() && t->device() != d)
            fail("{}: operands on different devices ({} and {})", op, d.str(), t->device().str());
    if (!d.is_cpu()) fail("{}: no CUDA kernel yet for this op (device {})", op, d.str());
    return d;
}

}  // namespace stac::kernels::detail
