// WeightSource: named weight tensors from a checkpoint, whatever the file format, read as f32.
// Architectures (models/) ask a source for tensors by their Hugging Face names and shapes (PyTorch
// order: [out, in] for a Linear); formats (safetensors, sharded safetensors, GGUF) implement it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/safetensors.h"

namespace stac {

class WeightSource {
public:
    virtual ~WeightSource() = default;
    virtual std::string describe() const = 0;               // the file(s), for messages
    virtual std::vector<std::string> names() const = 0;     // every tensor the source holds
    virtual bool has(const std::string& name) const = 0;
    // Shape (PyTorch order) and stored dtype name ("BF16", "Q4_1", ...); throw if the name is missing.
    virtual std::vector<int64_t> shape(const std::string& name) const = 0;
    virtual std::string dtype(const std::string& name) const = 0;
    // Converts the tensor to f32 into dst (numel floats); throws naming the file and tensor when its
    // dtype cannot be converted.
    virtual void read_f32(const std::string& name, float* dst) const = 0;
    // The file that holds `name` (for messages).
    virtual std::string file_of(const std::string& name) const = 0;
};

// model.safetensors, or the shards listed by model.safetensors.index.json ({"weight_map": {name:
// file}}): every shard is opened and validated, the index must name each tensor exactly once and
// agree with the shards (no tensor missing from its shard, none in a shard the index does not map
// there). F32, F16 and BF16 convert to f32.
class SafetensorsSource final : public WeightSource {
public:
    // `path` is a .safetensors file or a model.safetensors.index.json.
    static std::unique_ptr<SafetensorsSource> open(const std::filesystem::path& path);
    // DIR/model.safetensors, else DIR/model.safetensors.index.json; throws naming DIR when neither exists.
    static std::unique_ptr<SafetensorsSource> open_dir(const std::filesystem::path& dir);

    std::string describe() const override { return describe_; }
    std::vector<std::string> names() const override;
    bool has(const std::string& name) const override { return where_.count(name) != 0; }
    std::vector<int64_t> shape(const std::string& name) const override { return entry(name).shape; }
    std::string dtype(const std::string& name) const override { return entry(name).dtype_name; }
    void read_f32(const std::string& name, float* dst) const override;
    std::string file_of(const std::string& name) const override;

private:
    const SafetensorsEntry& entry(const std::string& name) const;
    std::string describe_;
    std::vector<SafetensorsFile> files_;
    std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

}  // namespace stac
