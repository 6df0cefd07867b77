#include "core/weight_source.h"

#include <set>

#include "core/error.h"
#include "core/json_file.h"

namespace stac {

namespace fs = std::filesystem;

std::unique_ptr<SafetensorsSource> SafetensorsSource::open(const fs::path& path) {
    auto src = std::unique_ptr<SafetensorsSource>(new SafetensorsSource());
    src->describe_ = path.string();
    if (path.filename().string().ends_with(".index.json")) {
        const std::string index = path.string();
        const nlohmann::json j = read_json_file(path);
        if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
            fail("{}: no \"weight_map\" object (not a safetensors index)", index);
        // shard file name -> the tensors the index puts in it
        std::map<std::string, std::set<std::string>> shards;
        for (const auto& [name, file] : j["weight_map"].items()) {
            if (!file.is_string()) fail("{}: weight_map[\"{}\"] must be a file name, found {}", index, name, file.dump());
            const std::string f = file.get<std::string>();
            if (f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos || f == "." || f == "..")
                fail("{}: weight_map[\"{}\"] = \"{}\" is not a file name in the same directory", index, name, f);
            shards[f].insert(name);
        }
        if (shards.empty()) fail("{}: weight_map is empty", index);
        for (const auto& [f, names] : shards) {
            const fs::path shard = path.parent_path() / f;
            if (!fs::exists(shard)) fail("{}: shard {} (listed in the index) not found", index, shard.string());
            src->files_.push_back(SafetensorsFile::open(shard));
            const SafetensorsFile& sf = src->files_.back();
            for (const std::string& n : names)
                if (!sf.find(n)) fail("{}: the index puts tensor {} in {}, which does not have it", index, n, shard.string());
            for (const SafetensorsEntry& e : sf.entries())
                if (!names.count(e.name))
                    fail("{}: {} holds tensor {}, which the index does not map to it", index, shard.string(), e.name);
            for (const std::string& n : names) src->where_[n] = src->files_.size() - 1;
        }
    } else {
        src->files_.push_back(SafetensorsFile::open(path));
        for (const SafetensorsEntry& e : src->files_.back().entries()) src->where_[e.name] = 0;
    }
    return src;
}

std::unique_ptr<SafetensorsSource> SafetensorsSource::open_dir(const fs::path& dir) {
    if (fs::exists(dir / "model.safetensors")) return open(dir / "model.safetensors");
    if (fs::exists(dir / "model.safetensors.index.json")) return open(dir / "model.safetensors.index.json");
    if (fs::exists(dir / "pytorch_model.bin") || fs::exists(dir / "pytorch_model.bin.index.json"))
        fail("{}: has pytorch_model.bin but no model.safetensors; stac reads safetensors only", dir.string());
    fail("{}: file not found (nor model.safetensors.index.json)", (dir / "model.safetensors").string());
}

std::vector<std::string> SafetensorsSource::names() const {
    std::vector<std::string> out;
    for (const auto& [n, i] : where_) out.push_back(n);
    return out;
}

const SafetensorsEntry& SafetensorsSource::entry(const std::string& name) const {
    const auto it = where_.find(name);
    if (it == where_.end()) fail("{}: no tensor {}", describe_, name);
    return *files_[it->second].find(name);
}

std::string SafetensorsSource::file_of(const std::string& name) const {
    const auto it = where_.find(name);
    return it == where_.end() ? describe_ : files_[it->second].path().string();
}

void SafetensorsSource::read_f32(const std::string& name, float* dst) const {
    const SafetensorsEntry& e = entry(name);
    if (e.dtype_name != "F32" && e.dtype_name != "F16" && e.dtype_name != "BF16")
        fail("{}: tensor {} has dtype {}, expected F32, F16 or BF16", file_of(name), name, e.dtype_name);
    size_t n = 1;
    for (int64_t d : e.shape) n *= size_t(d);
    convert_elements(dst, DType::F32, files_[where_.at(name)].bytes(e), *dtype_from_name(e.dtype_name), n);
}

}  // namespace stac
