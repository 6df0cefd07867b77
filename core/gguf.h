// GGUF files (the llama.cpp format): a validating reader over one memory mapping, with F32, F16,
// BF16, Q8_0, Q4_0 and Q4_1 tensors dequantized to f32 on request.
//
// Layout (little-endian, versions 2 and 3): "GGUF", u32 version, u64 tensor_count, u64 kv_count;
// kv_count metadata pairs (string key, u32 value type, value; arrays are u32 element type, u64
// count, elements; strings are u64 length + bytes); tensor_count tensor infos (string name, u32
// n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset into the data section); then
// padding to `general.alignment` (default 32), then the data section. Every length, count, type,
// offset and size is checked against the file before anything is handed out.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/weight_source.h"

namespace stac {

enum class GgufValueType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10,
    I64 = 11, F64 = 12
};
const char* gguf_value_type_name(GgufValueType t);

// One metadata value. Integers keep their value in `i` (u64 above INT64_MAX is refused at load),
// floats in `f`; arrays hold their elements (all of type elem_type).
struct GgufValue {
    GgufValueType type = GgufValueType::U8;
    GgufValueType elem_type = GgufValueType::U8;  // arrays only
    int64_t i = 0;
    double f = 0;
    bool b = false;
    std::string s;
    std::vector<GgufValue> arr;

    bool is_integer() const;
    bool is_float() const { return type == GgufValueType::F32 || type == GgufValueType::F64; }
};

// ggml tensor types by their numbers in the format; stac dequantizes the ones named here and
// knows the block sizes of the others (so it can validate a file it cannot fully read).
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, BF16 = 30 };
// Name ("Q4_1"), elements per block and bytes per block of a ggml type number; nullopt if unknown.
struct GgmlTypeInfo {
    const char* name;
    int64_t block;      // elements per block
    int64_t type_size;  // bytes per block
    bool supported;     // stac dequantizes it
};
std::optional<GgmlTypeInfo> ggml_type_info(uint32_t type);

struct GgufTensorInfo {
    std::string name;
    std::vector<int64_t> ne;  // ggml order: ne[0] is the innermost (contiguous) dimension
    uint32_t type = 0;
    uint64_t offset = 0;      // into the data section
    uint64_t nbytes = 0;
    int64_t numel() const;
    std::vector<int64_t> shape() const;  // PyTorch order (ne reversed): [rows, cols] for a matrix
    std::string type_name() const;
};

class GgufFile {
public:
    static constexpr uint64_t kMaxCount = uint64_t(1) << 24;  // tensors, metadata pairs, array elements

    // Maps the file and validates everything; throws stac::Error naming the file, key or tensor.
    static GgufFile open(const std::filesystem::path& path);

    const std::filesystem::path& path() const { return path_; }
    uint32_t version() const { return version_; }
    uint64_t alignment() const { return alignment_; }
    uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
    const std::map<std::string, GgufValue>& metadata() const { return kv_; }
    const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
    const GgufTensorInfo* find(const std::string& name) const;

    // Metadata lookups that throw naming the file and key when missing or of another type.
    const GgufValue* get(const std::string& key) const;  // nullptr if absent
    int64_t get_int(const std::string& key) const;       // any integer type
    double get_float(const std::string& key) const;      // F32/F64 (integers accepted too)
    std::string get_string(const std::string& key) const;
    const GgufValue& get_array(const std::string& key) const;

    const uint8_t* bytes(const GgufTensorInfo& t) const { return base_ + data_offset_ + t.offset; }
    // Dequantizes tensor `t` into dst (t.numel() floats); throws naming the tensor for a type stac
    // does not read.
    void dequantize(const GgufTensorInfo& t, float* dst) const;

private:
    std::filesystem::path path_;
    std::shared_ptr<const void> mapping_;
    const uint8_t* base_ = nullptr;
    uint64_t size_ = 0;
    uint32_t version_ = 0;
    uint64_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    std::map<std::string, GgufValue> kv_;
    std::vector<GgufTensorInfo> tensors_;
    std::map<std::string, size_t> index_;
};

// Dequantization of one row of blocks (n elements, a multiple of the block size): the
// reference formulas of the ggml formats. Q8_0: 32 x (f16 d, i8 q) -> d q. Q4_0: (f16 d, 16
// bytes) -> d (q - 8), low nibbles first 16 then high nibbles. Q4_1: (f16 d, f16 m, 16 bytes) ->
// d q + m, same nibble order.
void dequantize_q8_0(const uint8_t* src, float* dst, int64_t n);
void dequantize_q4_0(const uint8_t* src, float* dst, int64_t n);
void dequantize_q4_1(const uint8_t* src, float* dst, int64_t n);

// A GGUF file as a WeightSource under its own tensor names (PyTorch-order shapes).
class GgufSource final : public WeightSource {
public:
    explicit GgufSource(std::shared_ptr<const GgufFile> f) : f_(std::move(f)) {}
    std::string describe() const override { return f_->path().string(); }
    std::vector<std::string> names() const override;
    bool has(const std::string& name) const override { return f_->find(name) != nullptr; }
    std::vector<int64_t> shape(const std::string& name) const override { return info(name).shape(); }
    std::string dtype(const std::string& name) const override { return info(name).type_name(); }
    void read_f32(const std::string& name, float* dst) const override { f_->dequantize(info(name), dst); }
    std::string file_of(const std::string&) const override { return describe(); }
    const GgufFile& file() const { return *f_; }

private:
    const GgufTensorInfo& info(const std::string& name) const;
    std::shared_ptr<const GgufFile> f_;
};

}  // namespace stac
