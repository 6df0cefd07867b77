#include "models/model_dir.h"

#include "core/error.h"
#include "core/json_file.h"
#include "models/gguf_model.h"
#include "models/gpt2.h"
#include "models/gpt2_tokenizer.h"
#include "models/llama.h"
#include "models/hf_tokenizer.h"

namespace stac {

namespace fs = std::filesystem;

std::unique_ptr<LanguageModel> load_language_model(const fs::path& dir) {
    std::error_code ec;
    if (!fs::exists(dir, ec)) fail("{}: model directory not found", dir.string());
    if (fs::is_regular_file(dir, ec) && dir.extension() == ".gguf") return load_gguf_model(dir);
    if (!fs::is_directory(dir, ec)) fail("{}: not a directory (a model is a directory with config.json)", dir.string());
    const fs::path cfg = dir / "config.json";
    const nlohmann::json j = read_json_file(cfg);
    const std::string type = j.is_object() && j.contains("model_type") && j["model_type"].is_string()
                                 ? j["model_type"].get<std::string>()
                                 : "gpt2";
    if (type == "gpt2") return Gpt2Model::load(dir);
    if (type == "llama") return LlamaModel::load(dir);
    fail("{}: model_type \"{}\" is not supported (supported: gpt2, llama)", cfg.string(), type);
}

std::unique_ptr<LanguageModel> load_language_model(const fs::path& dir, const Placement& where) {
    if (where.device.is_cpu() && where.weights == DType::F32) return load_language_model(dir);
    if (where.device.is_cpu()) {
        if (where.weights != DType::BF16)
            fail("{}: the CPU computes from f32 or bf16 weight matrices, not {}", dir.string(), dtype_name(where.weights));
        std::unique_ptr<LanguageModel> m = load_language_model(dir);
        auto* g = dynamic_cast<Gpt2Model*>(m.get());
        if (!g) fail("{}: bf16 weight matrices on the CPU are for GPT-2 models; this is {}", dir.string(), m->info().architecture);
        g->set_weight_format(WeightFormat::BF16);
        return m;
    }
    require_device(where.device);  // before reading a large checkpoint for a GPU that is not there
    std::unique_ptr<LanguageModel> m = load_language_model(dir);
    if (auto* g = dynamic_cast<Gpt2Model*>(m.get())) return g->to(where);
    if (auto* l = dynamic_cast<LlamaModel*>(m.get())) {
        if (where.weights != DType::F32)
            fail("{}: a Llama model runs on a GPU with f32 weights (--weights-dtype f32), not {}", dir.string(),
                 dtype_name(where.weights));
        return l->to(where.device);
    }
    fail("{}: {} models run on the CPU only", dir.string(), m->info().architecture);
}

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& dir) {
    std::error_code ec;
    if (fs::is_regular_file(dir, ec)) return nullptr;  // a GGUF file: stac reads no tokenizer from it (token ids only)
    if (fs::exists(dir / "tokenizer.json")) return std::make_unique<HfTokenizer>(HfTokenizer::load_dir(dir));
    const bool vocab = fs::exists(dir / "vocab.json"), merges = fs::exists(dir / "merges.txt");
    if (!vocab && !merges) return nullptr;
    if (!vocab) fail("{}: has merges.txt but no vocab.json", dir.string());
    if (!merges) fail("{}: has vocab.json but no merges.txt", dir.string());
    return std::make_unique<Gpt2Tokenizer>(Gpt2Tokenizer::load_dir(dir));
}

}  // namespace stac
