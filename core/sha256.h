// SHA-256 (FIPS 180-4): names the source model of a converted SNN (snn_config.json).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace stac {

class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t n);
    std::array<uint8_t, 32> digest();  // finishes; the object is spent afterwards
    std::string hex();

private:
    void block(const uint8_t* p);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t buf_len_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view data);
// Hashes a file in 1 MiB pieces; throws stac::Error naming the file.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace stac
