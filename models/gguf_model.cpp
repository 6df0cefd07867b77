#include "models/gguf_model.h"

#include <map>

#include "core/error.h"

namespace stac {

namespace fs = std::filesystem;

LlamaConfig llama_config_from_gguf(const GgufFile& f) {
    const std::string file = f.path().string();
    auto opt_int = [&](const std::string& key, int64_t def) { return f.get(key) ? f.get_int(key) : def; };
    LlamaConfig c;
    c.n_layer = f.get_int("llama.block_count");
    c.hidden = f.get_int("llama.embedding_length");
    c.n_head = f.get_int("llama.attention.head_count");
    c.n_kv_head = opt_int("llama.attention.head_count_kv", c.n_head);
    c.intermediate = f.get_int("llama.feed_forward_length");
    c.n_positions = f.get_int("llama.context_length");
    c.rope_theta = f.get("llama.rope.freq_base") ? float(f.get_float("llama.rope.freq_base")) : 10000.0f;
    c.rms_norm_eps = float(f.get_float("llama.attention.layer_norm_rms_epsilon"));
    const GgufTensorInfo* emb = f.find("token_embd.weight");
    if (!emb) fail("{}: no tensor token_embd.weight: not a llama GGUF", file);
    c.vocab_size = opt_int("llama.vocab_size", emb->shape()[0]);
    c.tie_word_embeddings = f.find("output.weight") == nullptr;
    c.bos_token_id = opt_int("tokenizer.ggml.bos_token_id", -1);
    c.eos_token_id = opt_int("tokenizer.ggml.eos_token_id", -1);
    for (int64_t* x : {&c.n_layer, &c.hidden, &c.n_head, &c.n_kv_head, &c.intermediate, &c.n_positions, &c.vocab_size})
        if (*x < 1 || *x > (int64_t(1) << 24)) fail("{}: llama metadata value {} is out of range", file, *x);
    // What stac does not compute is refused, never run wrongly.
    if (opt_int("llama.expert_count", 0) > 0) fail("{}: a mixture-of-experts llama (llama.expert_count) is not supported", file);
    if (const GgufValue* s = f.get("llama.rope.scaling.type"); s && !(s->type == GgufValueType::String && s->s == "none"))
        fail("{}: llama.rope.scaling.type is set: rope scaling is not supported", file);
    if (f.find("rope_freqs.weight")) fail("{}: has rope_freqs.weight (scaled rope frequencies): not supported", file);
    c.validate(file);
    if (f.get("llama.rope.dimension_count") && f.get_int("llama.rope.dimension_count") != c.head_dim())
        fail("{}: llama.rope.dimension_count = {} differs from the head dim {} (partial rope is not supported)", file,
             f.get_int("llama.rope.dimension_count"), c.head_dim());
    return c;
}

namespace {

// A GGUF llama under Hugging Face names; q/k rows un-interleaved.
class GgufLlamaSource final : public WeightSource {
public:
    GgufLlamaSource(std::shared_ptr<const GgufFile> f, const LlamaConfig& cfg) : g_(std::move(f)), cfg_(cfg) {
        map("model.embed_tokens.weight", "token_embd.weight");
        map("model.norm.weight", "output_norm.weight");
        if (g_.has("output.weight")) map("lm_head.weight", "output.weight");
        static const std::pair<const char*, const char*> kLayer[] = {
            {"input_layernorm.weight", "attn_norm.weight"},   {"self_attn.q_proj.weight", "attn_q.weight"},
            {"self_attn.k_proj.weight", "attn_k.weight"},     {"self_attn.v_proj.weight", "attn_v.weight"},
            {"self_attn.o_proj.weight", "attn_output.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
            {"mlp.gate_proj.weight", "ffn_gate.weight"},      {"mlp.up_proj.weight", "ffn_up.weight"},
            {"mlp.down_proj.weight", "ffn_down.weight"}};
        for (int64_t l = 0; l < cfg.n_layer; ++l)
            for (const auto& [hf, gg] : kLayer)
                if (g_.has(fmt::format("blk.{}.{}", l, gg)))
                    map(fmt::format("model.layers.{}.{}", l, hf), fmt::format("blk.{}.{}", l, gg));
        // Anything the map does not cover keeps its GGUF name (and is refused by the loader).
        std::map<std::string, bool> used;
        for (const auto& [hf, gg] : to_gguf_) used[gg] = true;
        for (const std::string& n : g_.names())
            if (!used.count(n)) to_gguf_[n] = n;
    }
    std::string describe() const override { return g_.describe(); }
    std::vector<std::string> names() const override {
        std::vector<std::string> out;
        for (const auto& [hf, gg] : to_gguf_) out.push_back(hf);
        return out;
    }
    bool has(const std::string& name) const override { return to_gguf_.count(name) != 0; }
    std::vector<int64_t> shape(const std::string& name) const override { return g_.shape(gguf_name(name)); }
    std::string dtype(const std::string& name) const override { return g_.dtype(gguf_name(name)); }
    std::string file_of(const std::string& name) const override {
        return fmt::format("{} (GGUF tensor {})", g_.describe(), gguf_name(name));
    }
    void read_f32(const std::string& name, float* dst) const override {
        const std::string gg = gguf_name(name);
        g_.read_f32(gg, dst);
        int64_t heads = 0;
        if (name.ends_with("self_attn.q_proj.weight")) heads = cfg_.n_head;
        if (name.ends_with("self_attn.k_proj.weight")) heads = cfg_.n_kv_head;
        if (heads == 0) return;
        // llama.cpp stores row h*D + 2i + s where transformers has row h*D + s*D/2 + i (s = 0, 1).
        const std::vector<int64_t> sh = g_.shape(gg);
        const int64_t rows = sh[0], in = sh.size() > 1 ? sh[1] : 1, D = rows / heads;
        std::vector<float> tmp(dst, dst + rows * in);
        for (int64_t h = 0; h < heads; ++h)
            for (int64_t s = 0; s < 2; ++s)
                for (int64_t i = 0; i < D / 2; ++i)
                    std::copy_n(tmp.data() + (h * D + 2 * i + s) * in, in, dst + (h * D + s * (D / 2) + i) * in);
    }

private:
    void map(const std::string& hf, const std::string& gg) { to_gguf_[hf] = gg; }
    std::string gguf_name(const std::string& hf) const {
        const auto it = to_gguf_.find(hf);
        if (it == to_gguf_.end()) fail("{}: no tensor for {}", g_.describe(), hf);
        return it->second;
    }
    GgufSource g_;
    LlamaConfig cfg_;
    std::map<std::string, std::string> to_gguf_;
};

}  // namespace

std::unique_ptr<WeightSource> llama_source_from_gguf(std::shared_ptr<const GgufFile> f, const LlamaConfig& cfg) {
    return std::make_unique<GgufLlamaSource>(std::move(f), cfg);
}

std::unique_ptr<LanguageModel> load_gguf_model(const fs::path& path) {
    auto f = std::make_shared<const GgufFile>(GgufFile::open(path));
    const std::string arch = f->get_string("general.architecture");
    if (arch == "llama") {
        LlamaConfig cfg = llama_config_from_gguf(*f);
        const auto src = llama_source_from_gguf(f, cfg);
        LlamaWeights w = LlamaWeights::load(*src, cfg);
        return std::make_unique<LlamaModel>(std::move(cfg), std::move(w));
    }
    fail("{}: general.architecture \"{}\" is not supported from GGUF (supported: llama)", path.string(), arch);
}

}  // namespace stac
