// Tensor: shape (up to 4-D), dtype, device and a shared owning storage; contiguous row-major, nothing hidden.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <type_traits>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace stac {

// Shape of up to 4 dimensions; a rank-0 shape has one element.
class Shape {
public:
    static constexpr int kMaxRank = 4;

    Shape() = default;
    Shape(std::initializer_list<int64_t> dims);
    static Shape from(std::span<const int64_t> dims);  // throws if rank > 4 or a dim < 0

    int rank() const { return rank_; }
    int64_t operator[](int i) const { return dims_[static_cast<size_t>(i)]; }
    int64_t numel() const;
    std::span<const int64_t> dims() const { return {dims_.data(), static_cast<size_t>(rank_)}; }
    bool operator==(const Shape& o) const;
    std::string str() const;  // "[768, 2304]"

private:
    std::array<int64_t, kMaxRank> dims_{};
    int rank_ = 0;
};

// Owning storage: a host (64-byte aligned) or CUDA allocation, or a view kept alive by an owner
// (a memory-mapped file, a weight arena).
class Storage {
public:
    static std::shared_ptr<Storage> allocate(size_t bytes, Device device);
    static std::shared_ptr<Storage> borrow(void* ptr, size_t bytes, Device device,
                                           std::shared_ptr<const void> owner);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;

    void* data() const { return ptr_; }
    size_t bytes() const { return bytes_; }
    Device device() const { return device_; }

private:
    Storage() = default;
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
    Device device_{};
    bool owned_ = false;
    std::shared_ptr<const void> owner_;
};

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<int8_t> { static constexpr DType value = DType::I8; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
// f16 and bf16 are both stored as uint16_t: use raw_data<uint16_t>() after checking dtype().

class Tensor {
public:
    Tensor() = default;

    static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
    static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
    // A view over memory someone else owns; `owner` keeps it alive as long as the tensor.
    static Tensor view_of(void* ptr, const Shape& shape, DType dtype, Device device,
                          std::shared_ptr<const void> owner);
    // A view of `shape` at byte `offset` into `storage` (an arena); checks the range fits.
    static Tensor view_of(std::shared_ptr<Storage> storage, size_t offset, const Shape& shape, DType dtype);

    bool defined() const { return storage_ != nullptr; }
    const Shape& shape() const { return shape_; }
    int rank() const { return shape_.rank(); }
    int64_t dim(int i) const;  // negative i counts from the end
    int64_t numel() const { return shape_.numel(); }
    size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
    DType dtype() const { return dtype_; }
    Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
    const std::shared_ptr<Storage>& storage() const { return storage_; }

    void* raw() const;
    template <typename T> T* raw_data() const { return static_cast<T*>(raw()); }
    // Typed access; throws if T does not match dtype() or the tensor is not on the host.
    template <typename T> T* data() const {
        check_access(dtype_of<std::remove_const_t<T>>::value);
        return static_cast<T*>(raw());
    }

    // Same storage, new shape with the same number of elements.
    Tensor reshape(const Shape& shape) const;
    // Rows [begin, end) along dimension 0, sharing storage.
    Tensor slice_rows(int64_t begin, int64_t end) const;
    // New tensor with the elements converted (f32/f16/bf16 among themselves, integers to f32).
    Tensor to(DType dtype) const;
    // New tensor on `device` (a copy; returns *this if already there).
    Tensor to(Device device) const;
    Tensor clone() const;

    std::string describe() const;  // "F32[2, 3] cpu"

private:
    void check_access(DType want) const;

    std::shared_ptr<Storage> storage_;
    size_t offset_ = 0;  // bytes into storage
    Shape shape_;
    DType dtype_ = DType::F32;
};

// Converts `n` elements from `src_dtype` at `src` to `dst_dtype` at `dst` on the host.
void convert_elements(void* dst, DType dst_dtype, const void* src, DType src_dtype, size_t n);

}  // namespace stac
