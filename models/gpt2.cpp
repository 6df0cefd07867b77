#include "models/gpt2.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <map>
#include <set>

#include "core/json_file.h"
#include "core/safetensors.h"
#include "core/parallel.h"
#include "kernels/kernels.h"

namespace stac {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------- config

namespace {

// The activations transformers names for GPT-2 that stac computes exactly.
Activation activation_from_name(const std::string& name, const std::string& source) {
    static const std::map<std::string, Activation> kActs = {{"gelu_new", Activation::GeluTanh},
                                                            {"gelu_pytorch_tanh", Activation::GeluTanh},
                                                            {"gelu", Activation::GeluErf},
                                                            {"relu", Activation::Relu}};
    const auto it = kActs.find(name);
    if (it == kActs.end())
        fail("{}: activation_function \"{}\" is not supported (gelu_new, gelu_pytorch_tanh, gelu, relu)", source, name);
    return it->second;
}

}  // namespace

float Gpt2Config::attn_scale(int64_t layer) const {
    float s = scale_attn_weights ? 1.0f / std::sqrt(float(head_dim())) : 1.0f;
    if (scale_attn_by_inverse_layer_idx) s /= float(layer + 1);
    return s;
}

Gpt2Config Gpt2Config::from_json(const json& j, const std::string& source) {
    if (!j.is_object()) fail("{}: expected a JSON object", source);
    if (j.contains("model_type") && j["model_type"] != "gpt2")
        fail("{}: model_type is {}, expected \"gpt2\"", source, j["model_type"].dump());
    Gpt2Config c;
    constexpr int64_t kBig = int64_t(1) << 20;
    c.n_layer = json_int(j, "n_layer", 0, source, true, 1, 1024);
    c.n_embd = json_int(j, "n_embd", 0, source, true, 1, kBig);
    c.n_head = json_int(j, "n_head", 0, source, true, 1, kBig);
    c.n_positions = json_int(j, "n_positions", 0, source, true, 1, kBig);
    c.vocab_size = json_int(j, "vocab_size", 0, source, true, 1, int64_t(1) << 24);
    c.n_inner = json_int(j, "n_inner", 0, source, false, 1, kBig * 4);
    if (j.contains("n_ctx") && !j["n_ctx"].is_null()) {
        const int64_t n_ctx = json_int(j, "n_ctx", 0, source, false, 1, kBig);
        if (n_ctx != c.n_positions)
            fail("{}: n_ctx = {} disagrees with n_positions = {}", source, n_ctx, c.n_positions);
    }
    if (j.contains("layer_norm_epsilon")) {
        if (!j["layer_norm_epsilon"].is_number()) fail("{}: layer_norm_epsilon must be a number", source);
        c.layer_norm_epsilon = j["layer_norm_epsilon"].get<float>();
    }
    if (j.contains("activation_function")) {
        if (!j["activation_function"].is_string()) fail("{}: activation_function must be a string", source);
        c.activation_function = j["activation_function"].get<std::string>();
    }
    c.activation = activation_from_name(c.activation_function, source);
    c.tie_word_embeddings = json_bool(j, "tie_word_embeddings", true, source);
    c.scale_attn_weights = json_bool(j, "scale_attn_weights", true, source);
    c.scale_attn_by_inverse_layer_idx = json_bool(j, "scale_attn_by_inverse_layer_idx", false, source);
    if (json_bool(j, "add_cross_attention", false, source))
        fail("{}: add_cross_attention = true (an encoder-decoder GPT-2) is not supported", source);
    c.validate(source);
    return c;
}

void Gpt2Config::validate(const std::string& source) const {
    if (n_embd % n_head != 0) fail("{}: n_embd = {} is not divisible by n_head = {}", source, n_embd, n_head);
    if (!(layer_norm_epsilon > 0.0f) || !std::isfinite(layer_norm_epsilon))
        fail("{}: layer_norm_epsilon = {} must be a positive finite number", source, layer_norm_epsilon);
    if (activation_from_name(activation_function, source) != activation)
        fail("{}: activation {} does not match activation_function \"{}\"", source, int(activation), activation_function);
}

Gpt2Config Gpt2Config::load(const fs::path& config_json) {
    Gpt2Config c = from_json(read_json_file(config_json), config_json.string());
    return c;
}

json Gpt2Config::to_json() const {
    json j = {{"model_type", "gpt2"},
              {"architectures", {"GPT2LMHeadModel"}},
              {"n_layer", n_layer},
              {"n_embd", n_embd},
              {"n_head", n_head},
              {"n_positions", n_positions},
              {"n_ctx", n_positions},
              {"vocab_size", vocab_size},
              {"n_inner", n_inner > 0 ? json(n_inner) : json(nullptr)},
              {"layer_norm_epsilon", layer_norm_epsilon},
              {"activation_function", activation_function},
              {"tie_word_embeddings", tie_word_embeddings},
              {"scale_attn_weights", scale_attn_weights},
              {"scale_attn_by_inverse_layer_idx", scale_attn_by_inverse_layer_idx},
              {"bos_token_id", 50256},
              {"eos_token_id", 50256}};
    return j;
}

// ---------------------------------------------------------------- weights

namespace {

// Legacy causal-mask buffers of old checkpoints, "h.<n>.attn.bias" and "h.<n>.attn.masked_bias":
// not parameters. Matched exactly, so "h.<n>.attn.c_attn.bias" can never be mistaken for one.
bool is_mask_buffer(const std::string& name) {
    if (!name.starts_with("h.")) return false;
    size_t i = 2;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
    if (i == 2) return false;
    const std::string_view rest = std::string_view(name).substr(i);
    return rest == ".attn.bias" || rest == ".attn.masked_bias";
}

struct Want {
    std::string name;  // without prefix
    Shape shape;
    Tensor* dst;
};

}  // namespace

Gpt2Weights Gpt2Weights::load(const fs::path& path, const Gpt2Config& cfg) {
    const SafetensorsFile f = SafetensorsFile::open(path);
    const std::string file = path.string();
    const int64_t C = cfg.n_embd, I = cfg.inner(), V = cfg.vocab_size;

    std::string prefix;
    if (f.find("transformer.wte.weight")) prefix = "transformer.";
    else if (!f.find("wte.weight"))
        fail("{}: no wte.weight or transformer.wte.weight: not a GPT-2 checkpoint", file);

    Gpt2Weights w;
    w.layers.resize(size_t(cfg.n_layer));
    std::vector<Want> want = {{"wte.weight", {V, C}, &w.wte},
                              {"wpe.weight", {cfg.n_positions, C}, &w.wpe},
                              {"ln_f.weight", {C}, &w.lnf_g},
                              {"ln_f.bias", {C}, &w.lnf_b}};
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
        Gpt2Layer& L = w.layers[size_t(l)];
        const std::string p = fmt::format("h.{}.", l);
        want.push_back({p + "ln_1.weight", {C}, &L.ln1_g});
        want.push_back({p + "ln_1.bias", {C}, &L.ln1_b});
        want.push_back({p + "attn.c_attn.weight", {C, 3 * C}, &L.attn_w});
        want.push_back({p + "attn.c_attn.bias", {3 * C}, &L.attn_b});
        want.push_back({p + "attn.c_proj.weight", {C, C}, &L.proj_w});
        want.push_back({p + "attn.c_proj.bias", {C}, &L.proj_b});
        want.push_back({p + "ln_2.weight", {C}, &L.ln2_g});
        want.push_back({p + "ln_2.bias", {C}, &L.ln2_b});
        want.push_back({p + "mlp.c_fc.weight", {C, I}, &L.fc_w});
        want.push_back({p + "mlp.c_fc.bias", {I}, &L.fc_b});
        want.push_back({p + "mlp.c_proj.weight", {I, C}, &L.fc_proj_w});
        want.push_back({p + "mlp.c_proj.bias", {C}, &L.fc_proj_b});
    }
    // The head: "lm_head.weight" sits outside the "transformer." prefix in Hugging Face files.
    const SafetensorsEntry* head = f.find("lm_head.weight");
    if (!cfg.tie_word_embeddings) {
        if (!head) fail("{}: config.json has tie_word_embeddings = false but there is no lm_head.weight", file);
        want.push_back({"lm_head.weight", {V, C}, &w.lm_head});
    }

    // Every tensor in the file must be one we want or one we knowingly ignore.
    std::set<std::string> wanted;
    for (const Want& x : want) wanted.insert(x.name == "lm_head.weight" ? x.name : prefix + x.name);
    for (const SafetensorsEntry& e : f.entries()) {
        if (wanted.count(e.name)) continue;
        if (e.name == "lm_head.weight") continue;  // tied: the head is wte
        std::string rest = e.name;
        if (!prefix.empty() && rest.starts_with(prefix)) rest = rest.substr(prefix.size());
        if (is_mask_buffer(rest)) continue;
        fail("{}: unexpected tensor {} {} for a GPT-2 with n_layer = {} (config.json and weights disagree?)", file,
             e.name, e.shape_str(), cfg.n_layer);
    }

    // Check everything, then allocate one arena and convert into 64-byte aligned views.
    std::set<std::string> dtypes;
    size_t total = 0;
    std::vector<const SafetensorsEntry*> src;
    for (const Want& x : want) {
        const std::string full = x.name == "lm_head.weight" ? x.name : prefix + x.name;
        const SafetensorsEntry* e = f.find(full);
        if (!e) fail("{}: missing tensor {} (expected shape {})", file, full, x.shape.str());
        if (e->dtype_name != "F32" && e->dtype_name != "F16" && e->dtype_name != "BF16")
            fail("{}: tensor {} has dtype {}, expected F32, F16 or BF16", file, full, e->dtype_name);
        const std::vector<int64_t> want_dims(x.shape.dims().begin(), x.shape.dims().end());
        if (e->shape != want_dims)
            fail("{}: tensor {} has shape {}, expected {}", file, full, e->shape_str(), x.shape.str());
        dtypes.insert(e->dtype_name);
        total += (x.shape.numel() * sizeof(float) + 63) / 64 * 64;
        src.push_back(e);
    }
    w.arena = Storage::allocate(total, Device::cpu());
    size_t off = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const SafetensorsEntry* e = src[i];
        Tensor t = Tensor::view_of(w.arena, off, want[i].shape, DType::F32);
        convert_elements(t.raw(), DType::F32, f.bytes(*e), *dtype_from_name(e->dtype_name), size_t(t.numel()));
        *want[i].dst = t;
        off += (t.nbytes() + 63) / 64 * 64;
    }
    if (cfg.tie_word_embeddings) w.lm_head = w.wte;
    for (const auto& d : dtypes) w.source_dtype += (w.source_dtype.empty() ? "" : "+") + d;
    return w;
}

Gpt2Weights Gpt2Weights::random(const Gpt2Config& cfg, uint64_t seed) {
    cfg.validate("random weights");
    const int64_t C = cfg.n_embd, I = cfg.inner(), V = cfg.vocab_size;
    Gpt2Weights w;
    w.layers.resize(size_t(cfg.n_layer));
    struct Item {
        Shape shape;
        Tensor* dst;
        int init;  // 0: zeros, 1: ones, 2: normal
    };
    std::vector<Item> items = {{{V, C}, &w.wte, 2}, {{cfg.n_positions, C}, &w.wpe, 2}};
    for (Gpt2Layer& L : w.layers) {
        items.insert(items.end(), {{{C}, &L.ln1_g, 1}, {{C}, &L.ln1_b, 0}, {{C, 3 * C}, &L.attn_w, 2},
                                   {{3 * C}, &L.attn_b, 0}, {{C, C}, &L.proj_w, 2}, {{C}, &L.proj_b, 0},
                                   {{C}, &L.ln2_g, 1}, {{C}, &L.ln2_b, 0}, {{C, I}, &L.fc_w, 2},
                                   {{I}, &L.fc_b, 0}, {{I, C}, &L.fc_proj_w, 2}, {{C}, &L.fc_proj_b, 0}});
    }
    items.insert(items.end(), {{{C}, &w.lnf_g, 1}, {{C}, &w.lnf_b, 0}});
    if (!cfg.tie_word_embeddings) items.push_back({{V, C}, &w.lm_head, 2});
    size_t total = 0;
    for (const Item& it : items) total += (size_t(it.shape.numel()) * sizeof(float) + 63) / 64 * 64;
    w.arena = Storage::allocate(total, Device::cpu());
    size_t off = 0;
    for (size_t i = 0; i < items.size(); ++i) {
        Tensor t = Tensor::view_of(w.arena, off, items[i].shape, DType::F32);
        float* d = t.data<float>();
        const int64_t n = t.numel();
        if (items[i].init < 2) {
            std::fill(d, d + n, float(items[i].init));
        } else {
            // splitmix64 per block of 4096 values; normal by the sum of four uniforms (variance 1/3 each).
            parallel_for(n, 4096, [&](int64_t b, int64_t e) {
                uint64_t s = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + uint64_t(b);
                auto next = [&s] {
                    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
                    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
                    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
                    return double((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
                };
                for (int64_t j = b; j < e; ++j) {
                    const double u = next() + next() + next() + next() - 2.0;  // mean 0, variance 1/3
                    d[j] = float(u * std::sqrt(3.0) * 0.02);
                }
            });
        }
        *items[i].dst = t;
        off += (t.nbytes() + 63) / 64 * 64;
    }
    if (cfg.tie_word_embeddings) w.lm_head = w.wte;
    w.source_dtype = "random";
    return w;
}

Gpt2Weights Gpt2Weights::to(Device device, DType matrices) const {
    if (matrices != DType::F32 && matrices != DType::F16 && matrices != DType::BF16)
        fail("GPT-2 weights: dtype {} is not supported on a device (F32, F16, BF16)", dtype_name(matrices));
    if (device.is_cpu() && matrices != DType::F32)
        fail("GPT-2 weights: the CPU computes from F32 weights; {} weights need --device cuda", dtype_name(matrices));
    if (device == this->device() && matrices == DType::F32 && wte.dtype() == DType::F32) return *this;
    require_device(device);
    const bool tied = lm_head.raw() == wte.raw();
    Gpt2Weights out;
    out.layers.resize(layers.size());
    out.source_dtype = source_dtype;
    struct Item {
        const Tensor* src;
        Tensor* dst;
        DType dt;
    };
    std::vector<Item> items = {{&wte, &out.wte, matrices}, {&wpe, &out.wpe, matrices},
                               {&lnf_g, &out.lnf_g, DType::F32}, {&lnf_b, &out.lnf_b, DType::F32}};
    if (!tied) items.push_back({&lm_head, &out.lm_head, matrices});
    for (size_t l = 0; l < layers.size(); ++l) {
        const Gpt2Layer& a = layers[l];
        Gpt2Layer& b = out.layers[l];
        items.insert(items.end(), {{&a.ln1_g, &b.ln1_g, DType::F32}, {&a.ln1_b, &b.ln1_b, DType::F32},
                                   {&a.attn_w, &b.attn_w, matrices}, {&a.attn_b, &b.attn_b, DType::F32},
                                   {&a.proj_w, &b.proj_w, matrices}, {&a.proj_b, &b.proj_b, DType::F32},
                                   {&a.ln2_g, &b.ln2_g, DType::F32}, {&a.ln2_b, &b.ln2_b, DType::F32},
                                   {&a.fc_w, &b.fc_w, matrices},     {&a.fc_b, &b.fc_b, DType::F32},
                                   {&a.fc_proj_w, &b.fc_proj_w, matrices}, {&a.fc_proj_b, &b.fc_proj_b, DType::F32}});
    }
    // One host staging arena in the target layout (256-byte aligned views), then one copy.
    auto aligned = [](size_t n) { return (n + 255) / 256 * 256; };
    size_t total = 0;
    for (const Item& it : items) total += aligned(size_t(it.src->numel()) * dtype_size(it.dt));
    const Tensor host_src_check = wte;  // the source must be readable on the host
    if (!host_src_check.device().is_cpu()) fail("GPT-2 weights: moving weights between devices goes through the host");
    auto staging = Storage::allocate(total, Device::cpu());
    out.arena = Storage::allocate(total, device);
    size_t off = 0;
    for (const Item& it : items) {
        const size_t n = size_t(it.src->numel());
        convert_elements(static_cast<char*>(staging->data()) + off, it.dt, it.src->raw(), it.src->dtype(), n);
        *it.dst = Tensor::view_of(out.arena, off, it.src->shape(), it.dt);
        off += aligned(n * dtype_size(it.dt));
    }
    copy_bytes(out.arena->data(), device, staging->data(), Device::cpu(), total);
    synchronize(device);  // the staging arena is freed on return
    if (tied) out.lm_head = out.wte;
    return out;
}

int64_t Gpt2Weights::parameter_count() const {
    int64_t n = 0;
    for (const auto& [name, t] : named_tensors()) n += t.numel();
    return n;
}

std::vector<std::pair<std::string, Tensor>> Gpt2Weights::named_tensors() const {
    std::vector<std::pair<std::string, Tensor>> out = {{"transformer.wte.weight", wte}, {"transformer.wpe.weight", wpe}};
    for (size_t l = 0; l < layers.size(); ++l) {
        const Gpt2Layer& L = layers[l];
        const std::string p = fmt::format("transformer.h.{}.", l);
        out.insert(out.end(), {{p + "ln_1.weight", L.ln1_g},        {p + "ln_1.bias", L.ln1_b},
                               {p + "attn.c_attn.weight", L.attn_w}, {p + "attn.c_attn.bias", L.attn_b},
                               {p + "attn.c_proj.weight", L.proj_w}, {p + "attn.c_proj.bias", L.proj_b},
                               {p + "ln_2.weight", L.ln2_g},        {p + "ln_2.bias", L.ln2_b},
                               {p + "mlp.c_fc.weight", L.fc_w},     {p + "mlp.c_fc.bias", L.fc_b},
                               {p + "mlp.c_proj.weight", L.fc_proj_w}, {p + "mlp.c_proj.bias", L.fc_proj_b}});
    }
    out.push_back({"transformer.ln_f.weight", lnf_g});
    out.push_back({"transformer.ln_f.bias", lnf_b});
    if (lm_head.raw() != wte.raw()) out.push_back({"lm_head.weight", lm_head});
    return out;
}

// ---------------------------------------------------------------- state

Gpt2State::Gpt2State(const Gpt2Config& cfg, int64_t capacity, Device device)
    : cfg_(&cfg), capacity_(capacity), device_(device) {
    const int64_t H = cfg.n_head, D = cfg.head_dim();
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
        k.push_back(Tensor::zeros({H, capacity, D}, DType::F32, device));
        v.push_back(Tensor::zeros({H, capacity, D}, DType::F32, device));
    }
}

void Gpt2State::truncate(int64_t n) {
    if (n < 0 || n > length_) fail("cannot truncate a cache of {} tokens to {}", length_, n);
    length_ = n;
}

void Gpt2State::reserve(int64_t rows) {
    if (rows <= reserved_rows) return;
    const int64_t C = cfg_->n_embd, I = cfg_->inner();
    x = Tensor::empty({rows, C}, DType::F32, device_);
    h = Tensor::empty({rows, C}, DType::F32, device_);
    qkv = Tensor::empty({rows, 3 * C}, DType::F32, device_);
    att = Tensor::empty({rows, C}, DType::F32, device_);
    mlp = Tensor::empty({rows, I}, DType::F32, device_);
    // On the CPU one attention scratch per thread that runs heads side by side (kernels::attention).
    if (device_.is_cpu()) scores = Tensor::empty({std::min<int64_t>(cfg_->n_head, num_threads()) * rows * capacity_}, DType::F32);
    else logits = Tensor::empty({rows, cfg_->vocab_size}, DType::F32, device_);
    reserved_rows = rows;
}

// ---------------------------------------------------------------- model

Gpt2Model::Gpt2Model(Gpt2Config cfg, Gpt2Weights w) : cfg_(std::move(cfg)), w_(std::move(w)) {
    if (const char* g = std::getenv("STAC_CUDA_GRAPHS"); g && std::string_view(g) == "0") cuda_graphs_ = false;
    info_.architecture = "gpt2";
    info_.vocab_size = cfg_.vocab_size;
    info_.n_positions = cfg_.n_positions;
}

std::unique_ptr<Gpt2Model> Gpt2Model::load(const fs::path& dir) {
    if (!fs::is_directory(dir)) fail("{}: not a model directory", dir.string());
    Gpt2Config cfg = Gpt2Config::load(dir / "config.json");
    const fs::path st = dir / "model.safetensors";
    if (!fs::exists(st)) {
        if (fs::exists(dir / "pytorch_model.bin"))
            fail("{}: has pytorch_model.bin but no model.safetensors; stac reads safetensors only", dir.string());
        fail("{}: file not found", st.string());
    }
    Gpt2Weights w = Gpt2Weights::load(st, cfg);
    return std::make_unique<Gpt2Model>(std::move(cfg), std::move(w));
}

std::unique_ptr<Gpt2Model> Gpt2Model::to(const Placement& where) const {
    auto m = std::make_unique<Gpt2Model>(cfg_, w_.to(where.device, where.weights));
    m->cuda_graphs_ = cuda_graphs_;
    return m;
}

std::unique_ptr<ModelState> Gpt2Model::new_state(int64_t capacity) const {
    if (capacity <= 0) capacity = cfg_.n_positions;
    if (capacity > cfg_.n_positions)
        fail("cache capacity {} exceeds the model's n_positions = {}", capacity, cfg_.n_positions);
    return std::make_unique<Gpt2State>(cfg_, capacity, device());
}

std::string_view weight_format_name(WeightFormat f) { return f == WeightFormat::BF16 ? "bf16" : "f32"; }

WeightFormat weight_format_from_name(std::string_view s) {
    if (s == "f32") return WeightFormat::F32;
    if (s == "bf16") return WeightFormat::BF16;
    fail("unknown weight format '{}' (expected f32 or bf16)", s);
}

void Gpt2Model::set_weight_format(WeightFormat f) {
    if (f == format_) return;
    if (!device().is_cpu())
        fail("gpt2: packed bf16 matrices are the CPU's format; on {} choose the weights' dtype when moving the model (--weights-dtype)",
             device().str());
    packed_.clear();
    head_bf16_ = Tensor();
    if (f == WeightFormat::BF16) {
        for (const Gpt2Layer& L : w_.layers)
            packed_.push_back({kernels::pack_bf16_pairs(L.attn_w), kernels::pack_bf16_pairs(L.proj_w),
                               kernels::pack_bf16_pairs(L.fc_w), kernels::pack_bf16_pairs(L.fc_proj_w)});
        head_bf16_ = Tensor::empty(w_.lm_head.shape(), DType::BF16);
        convert_elements(head_bf16_.raw(), DType::BF16, w_.lm_head.raw(), DType::F32, size_t(w_.lm_head.numel()));
    }
    format_ = f;
}

void Gpt2Model::forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const {
    auto* st = dynamic_cast<Gpt2State*>(&state);
    if (!st) fail("gpt2 forward: the state was not made by this model");
    const int64_t T = int64_t(ids.size()), P = st->length(), R = logit_row_count(rows, T);
    check_forward_args(info_, ids, P, st->capacity(), rows, logits, "gpt2");
    st->reserve(T);
    const Device dev = device();
    // Logits for a host tensor are computed on the device and copied once at the end.
    const Tensor out = R == 0 || logits.device() == dev ? logits : st->logits.slice_rows(0, R);

    if (dev.is_cuda() && T == 1 && cuda_graphs_ && !st->graph_failed) {
        const int32_t host_step[2] = {ids[0], int32_t(P)};
        if (!st->step.defined()) st->step = Tensor::empty({2}, DType::I32, dev);
        copy_bytes(st->step.raw(), dev, host_step, Device::cpu(), sizeof(host_step));
        const bool stale = !st->decode_graph.valid() || st->graph_rows != R || st->graph_reserved != st->reserved_rows ||
                           st->graph_out != out.raw();
        if (st->decode_steps == 0) {
            run(*st, ids, P, R, out, true);  // warm-up: cuBLAS and the pool set up outside any recording
        } else {
            if (stale) {
                st->decode_graph.reset();
                try {
                    DeviceGraph::begin_capture(dev);
                    run(*st, ids, P, R, out, true);
                    st->decode_graph = DeviceGraph::end_capture(dev);
                    st->graph_rows = R, st->graph_reserved = st->reserved_rows, st->graph_out = out.raw();
                } catch (const Error& e) {
                    DeviceGraph::abort_capture(dev);
                    st->graph_failed = true;
                    std::fprintf(stderr, "stac: recording the decode step as a CUDA graph failed (%s); decoding without graphs\n",
                                 e.what());
                    run(*st, ids, P, R, out, true);
                }
            }
            if (st->decode_graph.valid() && !st->graph_failed) {
                st->decode_graph.launch();
                ++st->graph_replays;
            }
        }
        ++st->decode_steps;
    } else {
        run(*st, ids, P, R, out, false);
    }
    st->length_ = P + T;
    if (R > 0 && out.raw() != logits.raw()) copy_bytes(logits.raw(), logits.device(), out.raw(), out.device(), out.nbytes());
}

void Gpt2Model::run(Gpt2State& st, std::span<const int32_t> ids, int64_t P, int64_t R, const Tensor& out,
                    bool at_step) const {
    const int64_t T = int64_t(ids.size());
    // x: [T, C] residual stream; h: [T, C] normalised / projected; qkv: [T, 3C]; att: [T, C]; mlp: [T, I]
    const Tensor x = st.x.slice_rows(0, T), h = st.h.slice_rows(0, T), qkv = st.qkv.slice_rows(0, T),
                 att = st.att.slice_rows(0, T), mlp = st.mlp.slice_rows(0, T);
    // Each residual add is fused into the LayerNorm that follows it (x += h; h = ln(x)).
    const float eps = cfg_.layer_norm_epsilon;
    if (at_step) kernels::embedding_at(x, st.step, w_.wte, w_.wpe);
    else kernels::embedding(x, ids, P, w_.wte, w_.wpe);
    kernels::layernorm(h, x, w_.layers[0].ln1_g, w_.layers[0].ln1_b, eps);
    const bool bf16 = format_ == WeightFormat::BF16;  // the CPU's packed bf16 matrices
    for (int64_t l = 0; l < cfg_.n_layer; ++l) {
        const Gpt2Layer& L = w_.layers[size_t(l)];
        const PackedLayer* B = bf16 ? &packed_[size_t(l)] : nullptr;
        const Tensor &kc = st.k[size_t(l)], &vc = st.v[size_t(l)];
        kernels::linear(qkv, h, B ? B->attn_w : L.attn_w, L.attn_b);
        if (at_step) {
            kernels::kv_append_at(kc, vc, qkv, st.step);
            kernels::attention_at(att, qkv, kc, vc, st.step, cfg_.attn_scale(l), st.scores);
        } else {
            kernels::kv_append(kc, vc, qkv, P);
            kernels::attention(att, qkv, kc, vc, P, cfg_.attn_scale(l), st.scores);
        }
        kernels::linear(h, att, B ? B->proj_w : L.proj_w, L.proj_b);
        kernels::add_layernorm(x, h, h, L.ln2_g, L.ln2_b, eps);
        kernels::linear_activation(mlp, h, B ? B->fc_w : L.fc_w, L.fc_b, cfg_.activation);
        kernels::linear(h, mlp, B ? B->fc_proj_w : L.fc_proj_w, L.fc_proj_b);
        if (l + 1 < cfg_.n_layer) {
            const Gpt2Layer& next = w_.layers[size_t(l + 1)];
            kernels::add_layernorm(x, h, h, next.ln1_g, next.ln1_b, eps);
        } else {
            kernels::add(x, h);
        }
    }
    if (R == 0) return;
    // Final LayerNorm and head only for the rows that need logits.
    const Tensor xr = x.slice_rows(T - R, T), hr = h.slice_rows(0, R);
    kernels::layernorm(hr, xr, w_.lnf_g, w_.lnf_b, eps);
    kernels::matmul_nt(out, hr, format_ == WeightFormat::BF16 ? head_bf16_ : w_.lm_head);
}

}  // namespace stac
