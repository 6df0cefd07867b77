#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/allocator.h"

namespace stac {

std::optional<DType> dtype_from_name(std::string_view name) {
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::I32, DType::I8, DType::U8, DType::F64})
        if (dtype_name(t) == name) return t;
    return std::nullopt;
}

// ---- Shape ----

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(from(std::span<const int64_t>(dims.begin(), dims.size()))) {}

Shape Shape::from(std::span<const int64_t> dims) {
    if (dims.size() > kMaxRank) fail("shape of rank {} is not supported (at most {})", dims.size(), kMaxRank);
    Shape s;
    s.rank_ = static_cast<int>(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) {
        if (dims[i] < 0) fail("shape dimension {} is negative ({})", i, dims[i]);
        s.dims_[i] = dims[i];
    }
    return s;
}

int64_t Shape::numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<size_t>(i)];
    return n;
}

bool Shape::operator==(const Shape& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i)
        if (dims_[static_cast<size_t>(i)] != o.dims_[static_cast<size_t>(i)]) return false;
    return true;
}

std::string Shape::str() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) {
        if (i) s += ", ";
        s += std::to_string(dims_[static_cast<size_t>(i)]);
    }
    return s + "]";
}

// ---- Storage ----

std::shared_ptr<Storage> Storage::allocate(size_t bytes, Device device) {
    require_device(device);
    auto s = std::shared_ptr<Storage>(new Storage());
    s->ptr_ = device.is_cpu() ? host_alloc(bytes) : cuda_malloc(bytes, device.index);
    s->bytes_ = bytes;
    s->device_ = device;
    s->owned_ = true;
    return s;
}

std::shared_ptr<Storage> Storage::borrow(void* ptr, size_t bytes, Device device, std::shared_ptr<const void> owner) {
    auto s = std::shared_ptr<Storage>(new Storage());
    s->ptr_ = ptr;
    s->bytes_ = bytes;
    s->device_ = device;
    s->owner_ = std::move(owner);
    return s;
}

Storage::~Storage() {
    if (!owned_) return;
    if (device_.is_cpu()) host_free(ptr_);
    else cuda_free(ptr_, device_.index);
}

// ---- Tensor ----

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
    Tensor t;
    t.shape_ = shape;
    t.dtype_ = dtype;
    t.storage_ = Storage::allocate(t.nbytes(), device);
    return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
    Tensor t = empty(shape, dtype, device);
    zero_bytes(t.raw(), device, t.nbytes());
    return t;
}

Tensor Tensor::view_of(void* ptr, const Shape& shape, DType dtype, Device device, std::shared_ptr<const void> owner) {
    Tensor t;
    t.shape_ = shape;
    t.dtype_ = dtype;
    t.storage_ = Storage::borrow(ptr, t.nbytes(), device, std::move(owner));
    return t;
}

Tensor Tensor::view_of(std::shared_ptr<Storage> storage, size_t offset, const Shape& shape, DType dtype) {
    Tensor t;
    t.shape_ = shape;
    t.dtype_ = dtype;
    if (!storage || offset > storage->bytes() || t.nbytes() > storage->bytes() - offset)
        fail("tensor view {} {} at byte {} does not fit its storage of {} bytes", dtype_name(dtype), shape.str(),
             offset, storage ? storage->bytes() : 0);
    t.storage_ = std::move(storage);
    t.offset_ = offset;
    return t;
}

int64_t Tensor::dim(int i) const {
    const int r = shape_.rank();
    const int j = i < 0 ? i + r : i;
    if (j < 0 || j >= r) fail("dimension {} out of range for tensor {}", i, describe());
    return shape_[j];
}

void* Tensor::raw() const {
    if (!storage_) return nullptr;
    return static_cast<char*>(storage_->data()) + offset_;
}

void Tensor::check_access(DType want) const {
    if (!storage_) fail("access to an undefined tensor");
    if (dtype_ != want) fail("tensor {} accessed as {}", describe(), dtype_name(want));
    if (!device().is_cpu()) fail("tensor {} is not on the host", describe());
}

Tensor Tensor::reshape(const Shape& shape) const {
    if (shape.numel() != numel()) fail("cannot reshape tensor {} to {}", describe(), shape.str());
    Tensor t = *this;
    t.shape_ = shape;
    return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
    if (rank() == 0 || begin < 0 || end < begin || end > shape_[0])
        fail("row slice [{}, {}) out of range for tensor {}", begin, end, describe());
    std::array<int64_t, Shape::kMaxRank> d{};
    for (int i = 0; i < rank(); ++i) d[static_cast<size_t>(i)] = shape_[i];
    const int64_t row_elems = numel() / std::max<int64_t>(shape_[0], 1);
    d[0] = end - begin;
    Tensor t = *this;
    t.shape_ = Shape::from(std::span<const int64_t>(d.data(), static_cast<size_t>(rank())));
    t.offset_ = offset_ + static_cast<size_t>(begin * row_elems) * dtype_size(dtype_);
    return t;
}

void convert_elements(void* dst, DType dst_dtype, const void* src, DType src_dtype, size_t n) {
    if (dst_dtype == src_dtype) {
        std::memcpy(dst, src, n * dtype_size(dst_dtype));
        return;
    }
    auto load = [&](size_t i) -> float {
        switch (src_dtype) {
            case DType::F32: return static_cast<const float*>(src)[i];
            case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
            case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
            case DType::I32: return static_cast<float>(static_cast<const int32_t*>(src)[i]);
            case DType::I8: return static_cast<const int8_t*>(src)[i];
            case DType::U8: return static_cast<const uint8_t*>(src)[i];
            case DType::F64: return float(static_cast<const double*>(src)[i]);
        }
        return 0.0f;
    };
    switch (dst_dtype) {
        case DType::F32: {
            float* d = static_cast<float*>(dst);
            if (src_dtype == DType::F16) {
                const uint16_t* s = static_cast<const uint16_t*>(src);
                for (size_t i = 0; i < n; ++i) d[i] = f16_to_f32(s[i]);
            } else if (src_dtype == DType::BF16) {
                const uint16_t* s = static_cast<const uint16_t*>(src);
                for (size_t i = 0; i < n; ++i) d[i] = bf16_to_f32(s[i]);
            } else {
                for (size_t i = 0; i < n; ++i) d[i] = load(i);
            }
            return;
        }
        case DType::F16: {
            uint16_t* d = static_cast<uint16_t*>(dst);
            for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(load(i));
            return;
        }
        case DType::BF16: {
            uint16_t* d = static_cast<uint16_t*>(dst);
            for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(load(i));
            return;
        }
        default:
            fail("conversion from {} to {} is not supported", dtype_name(src_dtype), dtype_name(dst_dtype));
    }
}

Tensor Tensor::to(DType dtype) const {
    if (!device().is_cpu()) fail("dtype conversion of tensor {} needs it on the host", describe());
    Tensor out = empty(shape_, dtype);
    convert_elements(out.raw(), dtype, raw(), dtype_, static_cast<size_t>(numel()));
    return out;
}

Tensor Tensor::to(Device device) const {
    if (device == this->device()) return *this;
    Tensor out = empty(shape_, dtype_, device);
    copy_bytes(out.raw(), device, raw(), this->device(), nbytes());
    return out;
}

Tensor Tensor::clone() const {
    Tensor out = empty(shape_, dtype_, device());
    copy_bytes(out.raw(), device(), raw(), device(), nbytes());
    return out;
}

std::string Tensor::describe() const {
    return fmt::format("{}{} {}", dtype_name(dtype_), shape_.str(), device().str());
}

}  // namespace stac
