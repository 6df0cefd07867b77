// A read-only memory map of a whole regular file, for the readers (safetensors, GGUF) that keep
// views into it: the map lives as long as the last shared_ptr to it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace stac {

struct MappedFile {
    const uint8_t* data = nullptr;
    uint64_t size = 0;
    ~MappedFile();

    // Maps `file`; throws stac::Error naming it when it cannot be opened, is not a regular file,
    // cannot be mapped, or is shorter than min_size bytes (`format` names what it should be).
    static std::shared_ptr<const MappedFile> open(const std::string& file, uint64_t min_size, const char* format);
};

}  // namespace stac
