// Shared test helpers: fixture paths, temporary directories, and the transformers reference of a fixture model.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/json_file.h"
#include "core/safetensors.h"

namespace stac::test {

inline std::filesystem::path fixtures() { return STAC_FIXTURES_DIR; }
inline std::filesystem::path gpt2_fixture(const std::string& name) { return fixtures() / "gpt2" / name; }
inline std::filesystem::path repo_root() { return STAC_DATA_DIR; }

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
public:
    TempDir() {
        static std::mt19937_64 rng(std::random_device{}());
        path_ = std::filesystem::temp_directory_path() / ("stac-test-" + std::to_string(rng()));
        std::filesystem::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

// Copies a fixture model directory (config.json, model.safetensors) into `dst`.
inline void copy_model(const std::filesystem::path& src, const std::filesystem::path& dst) {
    std::filesystem::create_directories(dst);
    for (const char* f : {"config.json", "model.safetensors"})
        std::filesystem::copy_file(src / f, dst / f, std::filesystem::copy_options::overwrite_existing);
}

// One recorded case of tools/reference/make_gpt2_fixtures.py: ids, transformers' logits [T, V]
// of one batched forward, and its greedy continuation.
struct ReferenceCase {
    std::vector<int32_t> ids;
    std::vector<float> logits;
    int64_t vocab = 0;
    std::vector<int32_t> greedy;
};

inline std::vector<ReferenceCase> load_reference(const std::filesystem::path& model_dir) {
    const auto j = read_json_file(model_dir / "reference.json");
    const auto f = SafetensorsFile::open(model_dir / "reference.safetensors");
    std::vector<ReferenceCase> out;
    for (size_t k = 0; k < j["cases"].size(); ++k) {
        ReferenceCase c;
        const Tensor ids = f.tensor("case" + std::to_string(k) + ".ids");
        const Tensor logits = f.tensor("case" + std::to_string(k) + ".logits");
        c.ids.assign(ids.data<int32_t>(), ids.data<int32_t>() + ids.numel());
        c.logits.assign(logits.data<float>(), logits.data<float>() + logits.numel());
        c.vocab = logits.dim(1);
        c.greedy = j["cases"][k]["greedy"].get<std::vector<int32_t>>();
        out.push_back(std::move(c));
    }
    return out;
}

inline float max_abs_diff(const float* a, const float* b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

inline std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

}  // namespace stac::test
