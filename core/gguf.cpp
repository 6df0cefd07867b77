#include "core/gguf.h"


#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"
#include "core/mapped_file.h"

namespace stac {

namespace fs = std::filesystem;

const char* gguf_value_type_name(GgufValueType t) {
    static const char* kNames[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
    const auto i = uint32_t(t);
    return i < 13 ? kNames[i] : "?";
}

bool GgufValue::is_integer() const {
    switch (type) {
        case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::U16: case GgufValueType::I16:
        case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::U64: case GgufValueType::I64: return true;
        default: return false;
    }
}

std::optional<GgmlTypeInfo> ggml_type_info(uint32_t type) {
    // The ggml type numbers (the format's, fixed), with their block geometry.
    struct Row {
        uint32_t id;
        GgmlTypeInfo info;
    };
    static const Row kTable[] = {
        {0, {"F32", 1, 4, true}},         {1, {"F16", 1, 2, true}},         {2, {"Q4_0", 32, 18, true}},
        {3, {"Q4_1", 32, 20, true}},      {6, {"Q5_0", 32, 22, false}},     {7, {"Q5_1", 32, 24, false}},
        {8, {"Q8_0", 32, 34, true}},      {9, {"Q8_1", 32, 40, false}},     {10, {"Q2_K", 256, 84, false}},
        {11, {"Q3_K", 256, 110, false}},  {12, {"Q4_K", 256, 144, false}},  {13, {"Q5_K", 256, 176, false}},
        {14, {"Q6_K", 256, 210, false}},  {15, {"Q8_K", 256, 292, false}},  {16, {"IQ2_XXS", 256, 66, false}},
        {17, {"IQ2_XS", 256, 74, false}}, {18, {"IQ3_XXS", 256, 98, false}}, {19, {"IQ1_S", 256, 50, false}},
        {20, {"IQ4_NL", 32, 18, false}},  {21, {"IQ3_S", 256, 110, false}}, {22, {"IQ2_S", 256, 82, false}},
        {23, {"IQ4_XS", 256, 136, false}}, {24, {"I8", 1, 1, false}},       {25, {"I16", 1, 2, false}},
        {26, {"I32", 1, 4, false}},       {27, {"I64", 1, 8, false}},       {28, {"F64", 1, 8, false}},
        {29, {"IQ1_M", 256, 56, false}},  {30, {"BF16", 1, 2, true}},
    };
    for (const Row& r : kTable)
        if (r.id == type) return r.info;
    return std::nullopt;
}

int64_t GgufTensorInfo::numel() const {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    return n;
}

std::vector<int64_t> GgufTensorInfo::shape() const { return {ne.rbegin(), ne.rend()}; }

std::string GgufTensorInfo::type_name() const {
    const auto t = ggml_type_info(type);
    return t ? t->name : "type " + std::to_string(type);
}

// ---------------------------------------------------------------- parsing

namespace {

// A bounds-checked little-endian cursor over the mapped file; `what` says where a failure happened.
class Reader {
public:
    Reader(const uint8_t* base, uint64_t size, std::string file) : base_(base), size_(size), file_(std::move(file)) {}
    uint64_t pos() const { return pos_; }
    uint64_t left() const { return size_ - pos_; }

    void need(uint64_t n, const std::string& what) const {
        if (n > left())
            fail("{}: {} needs {} bytes at offset {}, past the end of the file ({} bytes): truncated", file_, what, n,
                 pos_, size_);
    }
    template <typename T>
    T read(const std::string& what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, base_ + pos_, sizeof(T));  // the format is little-endian, as is every host stac builds for
        pos_ += sizeof(T);
        return v;
    }
    std::string string(const std::string& what) {
        const uint64_t n = read<uint64_t>(what + " (length)");
        need(n, what);
        std::string s(reinterpret_cast<const char*>(base_ + pos_), size_t(n));
        pos_ += n;
        return s;
    }

private:
    const uint8_t* base_;
    uint64_t size_;
    uint64_t pos_ = 0;
    std::string file_;
};

uint64_t value_min_bytes(GgufValueType t) {
    switch (t) {
        case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::Bool: return 1;
        case GgufValueType::U16: case GgufValueType::I16: return 2;
        case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
        case GgufValueType::String: case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
        case GgufValueType::Array: return 12;
    }
    return 1;
}

GgufValue read_value(Reader& r, GgufValueType type, const std::string& what, const std::string& file, int depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
        case GgufValueType::U8: v.i = r.read<uint8_t>(what); break;
        case GgufValueType::I8: v.i = r.read<int8_t>(what); break;
        case GgufValueType::U16: v.i = r.read<uint16_t>(what); break;
        case GgufValueType::I16: v.i = r.read<int16_t>(what); break;
        case GgufValueType::U32: v.i = r.read<uint32_t>(what); break;
        case GgufValueType::I32: v.i = r.read<int32_t>(what); break;
        case GgufValueType::I64: v.i = r.read<int64_t>(what); break;
        case GgufValueType::U64: {
            const uint64_t u = r.read<uint64_t>(what);
            if (u > uint64_t(std::numeric_limits<int64_t>::max())) fail("{}: {} = {} is too large", file, what, u);
            v.i = int64_t(u);
            break;
        }
        case GgufValueType::F32: v.f = r.read<float>(what); break;
        case GgufValueType::F64: v.f = r.read<double>(what); break;
        case GgufValueType::Bool: {
            const uint8_t b = r.read<uint8_t>(what);
            if (b > 1) fail("{}: {} is a bool with byte value {}", file, what, b);
            v.b = b != 0;
            break;
        }
        case GgufValueType::String: v.s = r.string(what); break;
        case GgufValueType::Array: {
            if (depth > 0) fail("{}: {} is an array of arrays nested too deep", file, what);
            const uint32_t et = r.read<uint32_t>(what + " (element type)");
            if (et > uint32_t(GgufValueType::F64)) fail("{}: {} has unknown element type {}", file, what, et);
            v.elem_type = GgufValueType(et);
            const uint64_t n = r.read<uint64_t>(what + " (count)");
            if (n > GgufFile::kMaxCount || n * value_min_bytes(v.elem_type) > r.left())
                fail("{}: {} claims {} elements of {}, more than the {} bytes left in the file", file, what, n,
                     gguf_value_type_name(v.elem_type), r.left());
            v.arr.reserve(size_t(n));
            for (uint64_t k = 0; k < n; ++k) v.arr.push_back(read_value(r, v.elem_type, what, file, depth + 1));
            break;
        }
    }
    return v;
}

}  // namespace

GgufFile GgufFile::open(const fs::path& path) {
    const std::string file = path.string();
    const auto map = MappedFile::open(file, 24, "GGUF header");
    const uint64_t file_size = map->size;

    GgufFile g;
    g.path_ = path;
    g.base_ = map->data;
    g.size_ = file_size;
    g.mapping_ = map;
    Reader r(g.base_, file_size, file);
    if (std::memcmp(g.base_, "GGUF", 4) != 0) fail("{}: not a GGUF file (no \"GGUF\" magic at the start)", file);
    r.read<uint32_t>("magic");
    g.version_ = r.read<uint32_t>("version");
    if (g.version_ == 0x02000000u || g.version_ == 0x03000000u)
        fail("{}: a big-endian GGUF file; stac reads little-endian GGUF only", file);
    if (g.version_ != 2 && g.version_ != 3)
        fail("{}: GGUF version {} is not supported (versions 2 and 3)", file, g.version_);
    const uint64_t n_tensors = r.read<uint64_t>("tensor count");
    const uint64_t n_kv = r.read<uint64_t>("metadata count");
    if (n_tensors > kMaxCount || n_tensors * 24 > r.left())
        fail("{}: tensor count {} cannot fit in the file ({} bytes)", file, n_tensors, file_size);
    if (n_kv > kMaxCount || n_kv * 13 > r.left())
        fail("{}: metadata count {} cannot fit in the file ({} bytes)", file, n_kv, file_size);

    for (uint64_t k = 0; k < n_kv; ++k) {
        const std::string key = r.string(fmt::format("metadata key {}", k));
        const uint32_t t = r.read<uint32_t>("type of metadata " + key);
        if (t > uint32_t(GgufValueType::F64)) fail("{}: metadata {} has unknown value type {}", file, key, t);
        GgufValue v = read_value(r, GgufValueType(t), "metadata " + key, file, 0);
        if (!g.kv_.emplace(key, std::move(v)).second) fail("{}: metadata key {} appears more than once", file, key);
    }
    if (const GgufValue* a = g.get("general.alignment")) {
        if (a->type != GgufValueType::U32) fail("{}: general.alignment must be a u32, found {}", file, gguf_value_type_name(a->type));
        if (a->i == 0 || (a->i & (a->i - 1)) != 0) fail("{}: general.alignment = {} is not a power of two", file, a->i);
        g.alignment_ = uint64_t(a->i);
    }

    for (uint64_t k = 0; k < n_tensors; ++k) {
        GgufTensorInfo t;
        t.name = r.string(fmt::format("tensor {} name", k));
        const std::string what = "tensor " + t.name;
        if (t.name.empty()) fail("{}: tensor {} has an empty name", file, k);
        const uint32_t n_dims = r.read<uint32_t>(what + " dimension count");
        if (n_dims < 1 || n_dims > 4) fail("{}: {} has {} dimensions (1 to 4 allowed)", file, what, n_dims);
        unsigned __int128 numel = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t n = r.read<uint64_t>(what + " dimensions");
            if (n == 0 || n > (uint64_t(1) << 40)) fail("{}: {} has dimension {} = {}", file, what, d, n);
            numel *= n;
            if (numel > (static_cast<unsigned __int128>(1) << 50)) fail("{}: {} has an absurd shape", file, what);
            t.ne.push_back(int64_t(n));
        }
        t.type = r.read<uint32_t>(what + " type");
        t.offset = r.read<uint64_t>(what + " offset");
        const auto info = ggml_type_info(t.type);
        if (!info) fail("{}: {} has unknown ggml type {}", file, what, t.type);
        if (t.ne[0] % info->block != 0)
            fail("{}: {} ({}) has a row of {} elements, not a multiple of the block size {}", file, what, info->name,
                 t.ne[0], info->block);
        t.nbytes = uint64_t(numel / uint64_t(info->block)) * uint64_t(info->type_size);
        if (t.offset % g.alignment_ != 0)
            fail("{}: {} has offset {}, not a multiple of the alignment {}", file, what, t.offset, g.alignment_);
        if (!g.index_.emplace(t.name, g.tensors_.size()).second) fail("{}: tensor {} appears more than once", file, t.name);
        g.tensors_.push_back(std::move(t));
    }
    g.data_offset_ = (r.pos() + g.alignment_ - 1) / g.alignment_ * g.alignment_;
    if (g.data_offset_ > file_size && !g.tensors_.empty())
        fail("{}: data section at {} starts past the end of the file ({} bytes)", file, g.data_offset_, file_size);
    const uint64_t data_size = file_size > g.data_offset_ ? file_size - g.data_offset_ : 0;
    // Every tensor inside the data section, and no two overlapping.
    std::vector<const GgufTensorInfo*> by_offset;
    for (const GgufTensorInfo& t : g.tensors_) {
        if (t.offset > data_size || t.nbytes > data_size - t.offset)
            fail("{}: tensor {} ({} bytes at data offset {}) runs past the end of the file (data section {} bytes): truncated?",
                 file, t.name, t.nbytes, t.offset, data_size);
        by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (size_t k = 1; k < by_offset.size(); ++k)
        if (by_offset[k - 1]->offset + by_offset[k - 1]->nbytes > by_offset[k]->offset)
            fail("{}: tensors {} and {} overlap", file, by_offset[k - 1]->name, by_offset[k]->name);
    return g;
}

const GgufTensorInfo* GgufFile::find(const std::string& name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue* GgufFile::get(const std::string& key) const {
    const auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
}

int64_t GgufFile::get_int(const std::string& key) const {
    const GgufValue* v = get(key);
    if (!v) fail("{}: missing metadata {}", path_.string(), key);
    if (!v->is_integer()) fail("{}: metadata {} is a {}, expected an integer", path_.string(), key, gguf_value_type_name(v->type));
    return v->i;
}

double GgufFile::get_float(const std::string& key) const {
    const GgufValue* v = get(key);
    if (!v) fail("{}: missing metadata {}", path_.string(), key);
    if (v->is_integer()) return double(v->i);
    if (!v->is_float()) fail("{}: metadata {} is a {}, expected a number", path_.string(), key, gguf_value_type_name(v->type));
    return v->f;
}

std::string GgufFile::get_string(const std::string& key) const {
    const GgufValue* v = get(key);
    if (!v) fail("{}: missing metadata {}", path_.string(), key);
    if (v->type != GgufValueType::String)
        fail("{}: metadata {} is a {}, expected a string", path_.string(), key, gguf_value_type_name(v->type));
    return v->s;
}

const GgufValue& GgufFile::get_array(const std::string& key) const {
    const GgufValue* v = get(key);
    if (!v) fail("{}: missing metadata {}", path_.string(), key);
    if (v->type != GgufValueType::Array)
        fail("{}: metadata {} is a {}, expected an array", path_.string(), key, gguf_value_type_name(v->type));
    return *v;
}

// ---------------------------------------------------------------- dequantization

namespace {
uint16_t u16_at(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
}  // namespace

void dequantize_q8_0(const uint8_t* src, float* dst, int64_t n) {
    for (int64_t b = 0; b < n / 32; ++b, src += 34, dst += 32) {
        const float d = f16_to_f32(u16_at(src));
        for (int j = 0; j < 32; ++j) dst[j] = d * float(int8_t(src[2 + j]));
    }
}

void dequantize_q4_0(const uint8_t* src, float* dst, int64_t n) {
    for (int64_t b = 0; b < n / 32; ++b, src += 18, dst += 32) {
        const float d = f16_to_f32(u16_at(src));
        for (int j = 0; j < 16; ++j) {
            dst[j] = d * float(int(src[2 + j] & 0x0F) - 8);
            dst[j + 16] = d * float(int(src[2 + j] >> 4) - 8);
        }
    }
}

void dequantize_q4_1(const uint8_t* src, float* dst, int64_t n) {
    for (int64_t b = 0; b < n / 32; ++b, src += 20, dst += 32) {
        const float d = f16_to_f32(u16_at(src)), m = f16_to_f32(u16_at(src + 2));
        for (int j = 0; j < 16; ++j) {
            dst[j] = d * float(src[4 + j] & 0x0F) + m;
            dst[j + 16] = d * float(src[4 + j] >> 4) + m;
        }
    }
}

void GgufFile::dequantize(const GgufTensorInfo& t, float* dst) const {
    const uint8_t* p = bytes(t);
    const int64_t n = t.numel();
    switch (t.type) {
        case uint32_t(GgmlType::F32): std::memcpy(dst, p, size_t(n) * 4); return;
        case uint32_t(GgmlType::F16): convert_elements(dst, DType::F32, p, DType::F16, size_t(n)); return;
        case uint32_t(GgmlType::BF16): convert_elements(dst, DType::F32, p, DType::BF16, size_t(n)); return;
        case uint32_t(GgmlType::Q8_0): dequantize_q8_0(p, dst, n); return;
        case uint32_t(GgmlType::Q4_0): dequantize_q4_0(p, dst, n); return;
        case uint32_t(GgmlType::Q4_1): dequantize_q4_1(p, dst, n); return;
        default:
            fail("{}: tensor {} has type {}, which stac does not dequantize (F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
                 path_.string(), t.name, t.type_name());
    }
}

// ---------------------------------------------------------------- as a WeightSource

std::vector<std::string> GgufSource::names() const {
    std::vector<std::string> out;
    for (const GgufTensorInfo& t : f_->tensors()) out.push_back(t.name);
    return out;
}

const GgufTensorInfo& GgufSource::info(const std::string& name) const {
    const GgufTensorInfo* t = f_->find(name);
    if (!t) fail("{}: no tensor {}", describe(), name);
    return *t;
}

}  // namespace stac
