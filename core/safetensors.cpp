#include "core/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"

namespace stac {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Element size of every dtype the safetensors format names (stac holds only some of them).
std::optional<size_t> st_dtype_size(std::string_view name) {
    static const std::pair<std::string_view, size_t> kTable[] = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
        {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8},
    };
    for (const auto& [n, s] : kTable)
        if (n == name) return s;
    return std::nullopt;
}

uint64_t read_u64_le(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

}  // namespace

std::string SafetensorsEntry::shape_str() const {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
    const std::string file = path.string();
    const auto map = MappedFile::open(file, 8, "safetensors header");
    const uint64_t file_size = map->size;
    const uint8_t* base = map->data;

    const uint64_t header_len = read_u64_le(base);
    if (header_len > kMaxHeaderBytes)
        fail("{}: header length {} exceeds the limit of {} bytes (not a safetensors file?)", file, header_len,
             kMaxHeaderBytes);
    if (header_len > file_size - 8)
        fail("{}: header length {} runs past the end of the file ({} bytes): truncated or not safetensors", file,
             header_len, file_size);
    const uint64_t data_size = file_size - 8 - header_len;

    // Parse the header, noticing duplicate top-level names (JSON parsers silently keep the last).
    std::string duplicate;
    json header;
    try {
        std::set<std::string> seen;
        header = json::parse(base + 8, base + 8 + header_len,
                             [&](int depth, json::parse_event_t ev, json& parsed) {
                                 if (depth == 1 && ev == json::parse_event_t::key) {
                                     const auto& k = parsed.get_ref<const std::string&>();
                                     if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
                                 }
                                 return true;
                             });
    } catch (const json::exception& e) {
        fail("{}: header is not valid JSON: {}", file, e.what());
    }
    if (!duplicate.empty()) fail("{}: header names tensor '{}' more than once", file, duplicate);
    if (!header.is_object()) fail("{}: header is not a JSON object", file);

    SafetensorsFile f;
    f.path_ = path;
    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& name = it.key();
        const json& v = it.value();
        if (name == "__metadata__") {
            if (!v.is_object()) fail("{}: __metadata__ is not an object", file);
            for (auto m = v.begin(); m != v.end(); ++m) {
                if (!m.value().is_string()) fail("{}: __metadata__ value for '{}' is not a string", file, m.key());
                f.metadata_[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        if (!v.is_object()) fail("{}: entry for tensor {} is not an object", file, name);
        for (auto k = v.begin(); k != v.end(); ++k)
            if (k.key() != "dtype" && k.key() != "shape" && k.key() != "data_offsets")
                fail("{}: tensor {} has unknown field '{}'", file, name, k.key());
        if (!v.contains("dtype") || !v["dtype"].is_string()) fail("{}: tensor {} has no dtype string", file, name);
        if (!v.contains("shape") || !v["shape"].is_array()) fail("{}: tensor {} has no shape array", file, name);
        if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
            fail("{}: tensor {} has no data_offsets [begin, end]", file, name);

        SafetensorsEntry e;
        e.name = name;
        e.dtype_name = v["dtype"].get<std::string>();
        const auto esize = st_dtype_size(e.dtype_name);
        if (!esize) fail("{}: tensor {} has unknown dtype '{}'", file, name, e.dtype_name);
        e.dtype = dtype_from_name(e.dtype_name);

        unsigned __int128 numel = 1;
        for (const json& d : v["shape"]) {
            if (!d.is_number_unsigned()) fail("{}: tensor {} has a shape entry that is not a non-negative integer", file, name);
            const uint64_t n = d.get<uint64_t>();
            numel *= n;
            if (numel > (static_cast<unsigned __int128>(1) << 62)) fail("{}: tensor {} has an absurd shape", file, name);
            e.shape.push_back(static_cast<int64_t>(n));
        }
        for (const json& o : v["data_offsets"])
            if (!o.is_number_unsigned()) fail("{}: tensor {} has data_offsets that are not non-negative integers", file, name);
        const uint64_t b = v["data_offsets"][0].get<uint64_t>(), en = v["data_offsets"][1].get<uint64_t>();
        if (b > en) fail("{}: tensor {} has data_offsets [{}, {}] with begin after end", file, name, b, en);
        if (en > data_size)
            fail("{}: tensor {} has data_offsets [{}, {}] past the end of the data ({} bytes): file truncated?", file,
                 name, b, en, data_size);
        const unsigned __int128 want = numel * *esize;
        if (want != en - b)
            fail("{}: tensor {} is {} {} = {} bytes but its data_offsets span {} bytes", file, name, e.dtype_name,
                 e.shape_str(), static_cast<uint64_t>(want), en - b);
        e.begin = static_cast<size_t>(b);
        e.end = static_cast<size_t>(en);
        f.entries_.push_back(std::move(e));
    }

    // No two tensors may share bytes. Empty tensors own no bytes and are left out: one sorted
    // between two overlapping tensors would otherwise hide the overlap from the neighbour check.
    std::vector<const SafetensorsEntry*> by_offset;
    for (const auto& e : f.entries_)
        if (e.nbytes() > 0) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const auto* a, const auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
        const auto *prev = by_offset[i - 1], *cur = by_offset[i];
        if (cur->begin < prev->end)
            fail("{}: tensors {} [{}, {}) and {} [{}, {}) overlap", file, prev->name, prev->begin, prev->end, cur->name,
                 cur->begin, cur->end);
    }

    f.data_ = base + 8 + header_len;
    f.mapping_ = std::shared_ptr<const void>(map, map->data);
    return f;
}

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
    for (const auto& e : entries_)
        if (e.name == name) return &e;
    return nullptr;
}

const uint8_t* SafetensorsFile::bytes(const SafetensorsEntry& e) const { return data_ + e.begin; }

Tensor SafetensorsFile::tensor(std::string_view name) const {
    const SafetensorsEntry* e = find(name);
    if (!e) fail("{}: no tensor named {}", path_.string(), name);
    if (!e->dtype) fail("{}: tensor {} has dtype {}, which stac does not load", path_.string(), name, e->dtype_name);
    if (e->shape.size() > static_cast<size_t>(Shape::kMaxRank))
        fail("{}: tensor {} has rank {}, stac tensors have at most {}", path_.string(), name, e->shape.size(),
             Shape::kMaxRank);
    const Shape shape = Shape::from(e->shape);
    auto* p = const_cast<uint8_t*>(data_ + e->begin);  // the mapping is read-only; views are not written
    if (reinterpret_cast<uintptr_t>(p) % dtype_size(*e->dtype) != 0) {
        // Misaligned data (a header not padded to 8 bytes): copy rather than hand out an unaligned view.
        Tensor t = Tensor::empty(shape, *e->dtype);
        std::memcpy(t.raw(), p, e->nbytes());
        return t;
    }
    return Tensor::view_of(p, shape, *e->dtype, Device::cpu(), mapping_);
}

void save_safetensors(const fs::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
    json header = json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    size_t offset = 0;
    std::set<std::string> names;
    for (const auto& [name, t] : tensors) {
        if (name == "__metadata__" || !names.insert(name).second)
            fail("{}: cannot save two tensors named '{}'", path.string(), name);
        if (!t.defined()) fail("{}: tensor {} is undefined", path.string(), name);
        if (!t.device().is_cpu()) fail("{}: tensor {} must be on the host to be saved", path.string(), name);
        std::vector<int64_t> shape(t.shape().dims().begin(), t.shape().dims().end());
        header[name] = {{"dtype", std::string(dtype_name(t.dtype()))},
                        {"shape", shape},
                        {"data_offsets", {offset, offset + t.nbytes()}}};
        offset += t.nbytes();
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');

    const fs::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) fail("{}: cannot open for writing", tmp.string());
        uint8_t len[8];
        uint64_t n = text.size();
        for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
        out.write(reinterpret_cast<const char*>(len), 8);
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        for (const auto& [name, t] : tensors) out.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
        out.flush();
        if (!out) {
            out.close();
            std::error_code ec;
            fs::remove(tmp, ec);
            fail("{}: write failed", tmp.string());
        }
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        std::error_code ignored;
        fs::remove(tmp, ignored);
        fail("{}: cannot move {} into place: {}", path.string(), tmp.string(), ec.message());
    }
}

}  // namespace stac
