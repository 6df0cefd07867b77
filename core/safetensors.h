// safetensors files: a validating reader over one memory mapping (zero-copy tensor views) and a writer.
//
// Layout: [u64 little-endian N][N bytes of JSON header][data]. The header maps tensor names to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data section) and may
// hold "__metadata__": {string: string}. Everything is checked before any tensor is handed out.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace stac {

struct SafetensorsEntry {
    std::string name;
    std::string dtype_name;      // as written in the file ("F32", "BOOL", ...)
    std::optional<DType> dtype;  // set when stac can hold the dtype in a Tensor
    std::vector<int64_t> shape;
    size_t begin = 0, end = 0;   // byte range inside the data section
    size_t nbytes() const { return end - begin; }
    std::string shape_str() const;
};

class SafetensorsFile {
public:
    // Largest header accepted; real headers are well under a megabyte.
    static constexpr uint64_t kMaxHeaderBytes = 100u << 20;

    // Maps the file and validates the whole header; throws stac::Error naming the file and the problem.
    static SafetensorsFile open(const std::filesystem::path& path);

    const std::filesystem::path& path() const { return path_; }
    const std::vector<SafetensorsEntry>& entries() const { return entries_; }
    const SafetensorsEntry* find(std::string_view name) const;
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    // A host tensor viewing the mapped bytes (kept alive by the tensor). Throws if the name is
    // missing or its dtype is one stac does not hold (e.g. BOOL, F64).
    Tensor tensor(std::string_view name) const;
    // The raw bytes of an entry (any dtype).
    const uint8_t* bytes(const SafetensorsEntry& e) const;

private:
    std::filesystem::path path_;
    std::shared_ptr<const void> mapping_;
    const uint8_t* data_ = nullptr;  // start of the data section
    std::vector<SafetensorsEntry> entries_;
    std::map<std::string, std::string> metadata_;
};

// Writes tensors (host, any stac dtype) in the given order with an 8-byte aligned header, through
// a temporary file renamed into place so a failed write leaves no half-written file.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace stac
