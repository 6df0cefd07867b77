#include "models/llama.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/json_file.h"
#include "core/parallel.h"
#include "kernels/kernels.h"

namespace stac {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------- config

LlamaConfig LlamaConfig::from_json(const json& j, const std::string& source) {
    if (!j.is_object()) fail("{}: expected a JSON object", source);
    if (!j.contains("model_type") || j["model_type"] != "llama")
        fail("{}: model_type is {}, expected \"llama\"", source, j.contains("model_type") ? j["model_type"].dump() : "missing");
    LlamaConfig c;
    constexpr int64_t kBig = int64_t(1) << 20;
    c.n_layer = json_int(j, "num_hidden_layers", 0, source, true, 1, 1024);
    c.hidden = json_int(j, "hidden_size", 0, source, true, 1, kBig);
    c.n_head = json_int(j, "num_attention_heads", 0, source, true, 1, kBig);
    c.n_kv_head = json_int(j, "num_key_value_heads", c.n_head, source, false, 1, kBig);
    c.intermediate = json_int(j, "intermediate_size", 0, source, true, 1, 4 * kBig);
    c.n_positions = json_int(j, "max_position_embeddings", 0, source, true, 1, 8 * kBig);
    c.vocab_size = json_int(j, "vocab_size", 0, source, true, 1, int64_t(1) << 24);
    c.rope_theta = float(json_number(j, "rope_theta", 10000.0, source, true));
    c.rms_norm_eps = float(json_number(j, "rms_norm_eps", 1e-6, source, true));
    c.tie_word_embeddings = json_bool(j, "tie_word_embeddings", false, source);
    auto first_id = [&](const char* key) -> int64_t {
        if (!j.contains(key) || j[key].is_null()) return -1;
        const json& v = j[key].is_array() && !j[key].empty() ? j[key][0] : j[key];
        if (!v.is_number_integer()) fail("{}: \"{}\" must be a token id, found {}", source, key, j[key].dump());
        return v.get<int64_t>();
    };
    c.bos_token_id = first_id("bos_token_id");
    c.eos_token_id = first_id("eos_token_id");
    // What stac does not compute is refused, never run wrongly.
    if (j.contains("hidden_act") && j["hidden_act"] != "silu")
        fail("{}: hidden_act {} is not supported (silu)", source, j["hidden_act"].dump());
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
        fail("{}: rope_scaling {} is not supported (only plain rotary embeddings)", source, j["rope_scaling"].dump());
    if (json_bool(j, "attention_bias", false, source))
        fail("{}: attention_bias = true is not supported (Llama projections without bias)", source);
    if (json_bool(j, "mlp_bias", false, source))
        fail("{}: mlp_bias = true is not supported (Llama projections without bias)", source);
    if (json_bool(j, "rope_interleaved", false, source))
        fail("{}: rope_interleaved = true is not supported (transformers' rotate_half layout)", source);
    if (c.n_head > 0 && c.hidden % c.n_head == 0) {
        const int64_t hd = json_int(j, "head_dim", c.hidden / c.n_head, source, false, 1, kBig);
        if (hd != c.hidden / c.n_head)
            fail("{}: head_dim = {} differs from hidden_size / num_attention_heads = {} (not supported)", source, hd,
                 c.hidden / c.n_head);
    }
    c.validate(source);
    return c;
}

void LlamaConfig::validate(const std::string& source) const {
    if (hidden % n_head != 0)
        fail("{}: hidden_size = {} is not divisible by num_attention_heads = {}", source, hidden, n_head);
    if (head_dim() % 2 != 0) fail("{}: head dim {} is odd (rotary embeddings turn pairs)", source, head_dim());
    if (n_kv_head > n_head || n_head % n_kv_head != 0)
        fail("{}: num_attention_heads = {} is not a multiple of num_key_value_heads = {}", source, n_head, n_kv_head);
    if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta)) fail("{}: rope_theta = {} must be positive", source, rope_theta);
    if (!(rms_norm_eps > 0.0f) || !std::isfinite(rms_norm_eps))
        fail("{}: rms_norm_eps = {} must be a positive finite number", source, rms_norm_eps);
}

LlamaConfig LlamaConfig::load(const fs::path& config_json) {
    return from_json(read_json_file(config_json), config_json.string());
}

json LlamaConfig::to_json() const {
    json j = {{"model_type", "llama"},
              {"architectures", {"LlamaForCausalLM"}},
              {"num_hidden_layers", n_layer},
              {"hidden_size", hidden},
              {"num_attention_heads", n_head},
              {"num_key_value_heads", n_kv_head},
              {"intermediate_size", intermediate},
              {"max_position_embeddings", n_positions},
              {"vocab_size", vocab_size},
              {"rope_theta", rope_theta},
              {"rms_norm_eps", rms_norm_eps},
              {"tie_word_embeddings", tie_word_embeddings},
              {"hidden_act", "silu"},
              {"rope_scaling", nullptr},
              {"attention_bias", false}};
    if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
    if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
    return j;
}

// ---------------------------------------------------------------- weights

namespace {

// "model.layers.<n>.self_attn.rotary_emb.inv_freq": a buffer of older checkpoints, not a parameter.
bool is_inv_freq_buffer(const std::string& name) {
    return name.starts_with("model.layers.") && name.ends_with(".self_attn.rotary_emb.inv_freq");
}

// One source tensor, [out, in] as PyTorch stores it, and where it goes in the arena: copied as it
// is (transpose = false) or transposed into columns [col, col + out) of an [in, ld] matrix.
struct Piece {
    std::string name;
    std::vector<int64_t> shape;
    Tensor* dst;
    bool transpose = false;
    int64_t col = 0;
};

}  // namespace

LlamaWeights LlamaWeights::load(const WeightSource& src, const LlamaConfig& cfg) {
    const int64_t C = cfg.hidden, I = cfg.intermediate, V = cfg.vocab_size, H = cfg.n_head, G = cfg.n_kv_head,
                  D = cfg.head_dim();
    LlamaWeights w;
    w.layers.resize(size_t(cfg.n_layer));

    // The arena's tensors (shapes as stac keeps them) and the source pieces that fill them.
    std::vector<std::pair<Tensor*, Shape>> slots = {{&w.embed, {V, C}}, {&w.norm, {C}}};
    std::vector<Piece> pieces = {{"model.embed_tokens.weight", {V, C}, &w.embed},
                                 {"model.norm.weight", {C}, &w.norm}};
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
        LlamaLayer& L = w.layers[size_t(l)];
        const std::string p = fmt::format("model.layers.{}.", l);
        slots.insert(slots.end(), {{&L.attn_norm, {C}},
                                   {&L.wqkv, {C, cfg.qkv_width()}},
                                   {&L.wo, {H * D, C}},
                                   {&L.mlp_norm, {C}},
                                   {&L.w_gate_up, {C, 2 * I}},
                                   {&L.w_down, {I, C}}});
        pieces.insert(pieces.end(), {{p + "input_layernorm.weight", {C}, &L.attn_norm},
                                     {p + "self_attn.q_proj.weight", {H * D, C}, &L.wqkv, true, 0},
                                     {p + "self_attn.k_proj.weight", {G * D, C}, &L.wqkv, true, H * D},
                                     {p + "self_attn.v_proj.weight", {G * D, C}, &L.wqkv, true, (H + G) * D},
                                     {p + "self_attn.o_proj.weight", {C, H * D}, &L.wo, true, 0},
                                     {p + "post_attention_layernorm.weight", {C}, &L.mlp_norm},
                                     {p + "mlp.gate_proj.weight", {I, C}, &L.w_gate_up, true, 0},
                                     {p + "mlp.up_proj.weight", {I, C}, &L.w_gate_up, true, I},
                                     {p + "mlp.down_proj.weight", {C, I}, &L.w_down, true, 0}});
    }
    if (!cfg.tie_word_embeddings) {
        if (!src.has("lm_head.weight"))
            fail("{}: config.json has tie_word_embeddings = false but there is no lm_head.weight", src.describe());
        slots.push_back({&w.lm_head, {V, C}});
        pieces.push_back({"lm_head.weight", {V, C}, &w.lm_head});
    }

    // Every tensor in the source must be one we want or one we knowingly ignore.
    std::set<std::string> wanted;
    for (const Piece& x : pieces) wanted.insert(x.name);
    for (const std::string& n : src.names()) {
        if (wanted.count(n) || is_inv_freq_buffer(n)) continue;
        if (n == "lm_head.weight" && cfg.tie_word_embeddings) continue;  // tied: the head is embed
        fail("{}: unexpected tensor {} {} for a Llama with num_hidden_layers = {} (config.json and weights disagree?)",
             src.file_of(n), n, Shape::from(src.shape(n)).str(), cfg.n_layer);
    }
    // Check names, shapes and dtypes of everything before converting anything.
    std::set<std::string> dtypes;
    for (const Piece& x : pieces) {
        if (!src.has(x.name))
            fail("{}: missing tensor {} (expected shape {})", src.describe(), x.name, Shape::from(x.shape).str());
        if (src.shape(x.name) != x.shape)
            fail("{}: tensor {} has shape {}, expected {}", src.file_of(x.name), x.name,
                 Shape::from(src.shape(x.name)).str(), Shape::from(x.shape).str());
        dtypes.insert(src.dtype(x.name));
    }

    size_t total = 0;
    for (const auto& [t, s] : slots) total += (size_t(s.numel()) * sizeof(float) + 63) / 64 * 64;
    w.arena = Storage::allocate(total, Device::cpu());
    size_t off = 0;
    for (const auto& [t, s] : slots) {
        *t = Tensor::view_of(w.arena, off, s, DType::F32);
        off += (t->nbytes() + 63) / 64 * 64;
    }
    std::vector<float> tmp;
    for (const Piece& x : pieces) {
        if (!x.transpose) {
            src.read_f32(x.name, x.dst->data<float>());
            continue;
        }
        // source [out, in] -> columns [col, col + out) of dst [in, ld]
        const int64_t out = x.shape[0], in = x.shape[1], ld = x.dst->dim(1);
        tmp.resize(size_t(out * in));
        src.read_f32(x.name, tmp.data());
        float* d = x.dst->data<float>();
        for (int64_t i = 0; i < in; ++i)
            for (int64_t o = 0; o < out; ++o) d[i * ld + x.col + o] = tmp[size_t(o * in + i)];
    }
    if (cfg.tie_word_embeddings) w.lm_head = w.embed;
    for (const auto& d : dtypes) w.source_dtype += (w.source_dtype.empty() ? "" : "+") + d;
    return w;
}

int64_t LlamaWeights::parameter_count() const {
    int64_t n = embed.numel() + norm.numel();
    for (const LlamaLayer& L : layers)
        n += L.attn_norm.numel() + L.wqkv.numel() + L.wo.numel() + L.mlp_norm.numel() + L.w_gate_up.numel() +
             L.w_down.numel();
    if (lm_head.raw() != embed.raw()) n += lm_head.numel();
    return n;
}

// ---------------------------------------------------------------- state

LlamaState::LlamaState(const LlamaConfig& cfg, int64_t capacity, Device device)
    : cfg_(&cfg), capacity_(capacity), device_(device) {
    // Uninitialised: only rows [0, length) are ever read, and a long context (SmolLM2: 8192
    // positions) should not touch its whole cache up front.
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
        k.push_back(Tensor::empty({cfg.n_kv_head, capacity, cfg.head_dim()}, DType::F32, device));
        v.push_back(Tensor::empty({cfg.n_kv_head, capacity, cfg.head_dim()}, DType::F32, device));
    }
}

void LlamaState::truncate(int64_t n) {
    if (n < 0 || n > length_) fail("cannot truncate a cache of {} tokens to {}", length_, n);
    length_ = n;
}

void LlamaState::reserve(int64_t rows) {
    if (rows <= reserved_rows) return;
    const int64_t C = cfg_->hidden, I = cfg_->intermediate;
    const Device d = device_;
    x = Tensor::empty({rows, C}, DType::F32, d);
    h = Tensor::empty({rows, C}, DType::F32, d);
    qkv = Tensor::empty({rows, cfg_->qkv_width()}, DType::F32, d);
    att = Tensor::empty({rows, cfg_->n_head * cfg_->head_dim()}, DType::F32, d);
    gu = Tensor::empty({rows, 2 * I}, DType::F32, d);
    mlp = Tensor::empty({rows, I}, DType::F32, d);
    if (d.is_cpu()) {
        // One attention scratch per thread that runs heads side by side (kernels::attention).
        scores = Tensor::empty({std::min<int64_t>(cfg_->n_head, num_threads()) * rows * capacity_}, DType::F32);
    } else {
        logits = Tensor::empty({rows, cfg_->vocab_size}, DType::F32, d);  // the GPU kernels draw their own attention scratch
    }
    reserved_rows = rows;
}

// ---------------------------------------------------------------- model

LlamaModel::LlamaModel(LlamaConfig cfg, LlamaWeights w) : cfg_(std::move(cfg)), w_(std::move(w)) {
    info_.architecture = "llama";
    info_.vocab_size = cfg_.vocab_size;
    info_.n_positions = cfg_.n_positions;
}

std::unique_ptr<LlamaModel> LlamaModel::load(const fs::path& dir) {
    if (!fs::is_directory(dir)) fail("{}: not a model directory", dir.string());
    LlamaConfig cfg = LlamaConfig::load(dir / "config.json");
    const auto src = SafetensorsSource::open_dir(dir);
    LlamaWeights w = LlamaWeights::load(*src, cfg);
    return std::make_unique<LlamaModel>(std::move(cfg), std::move(w));
}

std::unique_ptr<ModelState> LlamaModel::new_state(int64_t capacity) const {
    if (capacity <= 0) capacity = cfg_.n_positions;
    if (capacity > cfg_.n_positions)
        fail("cache capacity {} exceeds the model's max_position_embeddings = {}", capacity, cfg_.n_positions);
    return std::make_unique<LlamaState>(cfg_, capacity, device());
}

LlamaWeights LlamaWeights::to(Device d) const {
    if (d == device()) return *this;
    require_device(d);
    LlamaWeights out;
    out.source_dtype = source_dtype;
    out.embed = embed.to(d);
    out.norm = norm.to(d);
    out.lm_head = lm_head.raw() == embed.raw() ? out.embed : lm_head.to(d);
    for (const LlamaLayer& a : layers)
        out.layers.push_back({a.attn_norm.to(d), a.wqkv.to(d), a.wo.to(d), a.mlp_norm.to(d), a.w_gate_up.to(d), a.w_down.to(d)});
    synchronize(d);
    return out;
}

std::unique_ptr<LlamaModel> LlamaModel::to(Device d) const { return std::make_unique<LlamaModel>(cfg_, w_.to(d)); }

void LlamaModel::forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const {
    auto* st = dynamic_cast<LlamaState*>(&state);
    if (!st) fail("llama forward: the state was not made by this model");
    if (st->device() != device()) fail("llama forward: the state is on {}, the model on {}", st->device().str(), device().str());
    const int64_t T = int64_t(ids.size()), P = st->length(), R = logit_row_count(rows, T);
    check_forward_args(info_, ids, P, st->capacity(), rows, logits, "llama");
    st->reserve(T);
    const int64_t H = cfg_.n_head, G = cfg_.n_kv_head, D = cfg_.head_dim();
    const float scale = 1.0f / std::sqrt(float(D));

    // x: [T, C] residual stream; h: [T, C] normalised / projected; qkv: [T, (H + 2G) D];
    // att: [T, H D]; gu: [T, 2I]; mlp: [T, I]
    const Tensor x = st->x.slice_rows(0, T), h = st->h.slice_rows(0, T), qkv = st->qkv.slice_rows(0, T),
                 att = st->att.slice_rows(0, T), gu = st->gu.slice_rows(0, T), mlp = st->mlp.slice_rows(0, T);
    kernels::embedding(x, ids, P, w_.embed, Tensor());
    for (int64_t l = 0; l < cfg_.n_layer; ++l) {
        const LlamaLayer& L = w_.layers[size_t(l)];
        kernels::rmsnorm(h, x, L.attn_norm, cfg_.rms_norm_eps);
        kernels::linear(qkv, h, L.wqkv, Tensor());
        kernels::rope(qkv, H + G, D, P, cfg_.rope_theta);  // q and k at their absolute positions P..
        kernels::kv_append(st->k[size_t(l)], st->v[size_t(l)], qkv, P);
        kernels::attention(att, qkv, st->k[size_t(l)], st->v[size_t(l)], P, scale, st->scores);
        kernels::linear(h, att, L.wo, Tensor());
        kernels::add(x, h);
        kernels::rmsnorm(h, x, L.mlp_norm, cfg_.rms_norm_eps);
        kernels::linear(gu, h, L.w_gate_up, Tensor());
        kernels::silu_gate(mlp, gu);
        kernels::linear(h, mlp, L.w_down, Tensor());
        kernels::add(x, h);
    }
    st->length_ = P + T;
    if (R == 0) return;
    // Final RMSNorm and head only for the rows that need logits.
    const Tensor xr = x.slice_rows(T - R, T), hr = h.slice_rows(0, R);
    kernels::rmsnorm(hr, xr, w_.norm, cfg_.rms_norm_eps);
    // On a GPU writing host logits: computed on the device, then copied once.
    const Tensor out = logits.device() == device() ? logits : st->logits.slice_rows(0, R);
    kernels::matmul_nt(out, hr, w_.lm_head);
    if (out.raw() != logits.raw()) copy_bytes(logits.raw(), logits.device(), out.raw(), out.device(), out.nbytes());
}

}  // namespace stac
