// GPT-2: config.json, weights from a Hugging Face model.safetensors (one f32 arena), and the forward
// on the CPU or a GPU (weights uploaded once into one device arena, KV cache on the device).
// Letters: T tokens in a chunk, P tokens already cached, C = n_embd, H heads, D = C/H, I = n_inner,
// V vocabulary, L layers, cap cache capacity.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "kernels/math.h"
#include "models/language_model.h"

namespace stac {

struct Gpt2Config {
    int64_t n_layer = 12, n_embd = 768, n_head = 12, n_positions = 1024, vocab_size = 50257;
    int64_t n_inner = 0;  // 0: 4 * n_embd
    float layer_norm_epsilon = 1e-5f;
    std::string activation_function = "gelu_new";
    Activation activation = Activation::GeluTanh;
    bool tie_word_embeddings = true;
    bool scale_attn_weights = true;
    bool scale_attn_by_inverse_layer_idx = false;

    int64_t head_dim() const { return n_embd / n_head; }
    int64_t inner() const { return n_inner > 0 ? n_inner : 4 * n_embd; }
    // Attention score scale of layer l, as transformers' GPT2Attention computes it.
    float attn_scale(int64_t layer) const;

    // Reads and checks a Hugging Face GPT-2 config.json; `source` names the file in errors.
    static Gpt2Config from_json(const nlohmann::json& j, const std::string& source);
    static Gpt2Config load(const std::filesystem::path& config_json);
    nlohmann::json to_json() const;
    // Throws stac::Error (naming `source`) if values are inconsistent.
    void validate(const std::string& source) const;
};

// Views into one f32 arena; matrices in Hugging Face Conv1D layout [in, out].
struct Gpt2Layer {
    Tensor ln1_g, ln1_b;        // [C]
    Tensor attn_w, attn_b;      // [C, 3C], [3C]
    Tensor proj_w, proj_b;      // [C, C], [C]
    Tensor ln2_g, ln2_b;        // [C]
    Tensor fc_w, fc_b;          // [C, I], [I]
    Tensor fc_proj_w, fc_proj_b;  // [I, C], [C]
};

struct Gpt2Weights {
    Tensor wte;  // [V, C]
    Tensor wpe;  // [n_positions, C]
    std::vector<Gpt2Layer> layers;
    Tensor lnf_g, lnf_b;  // [C]
    Tensor lm_head;       // [V, C]: wte itself when tied
    std::shared_ptr<Storage> arena;
    std::string source_dtype;  // dtype(s) found in the file, e.g. "F16"

    // Loads model.safetensors for `cfg`: names with or without "transformer.", causal-mask buffers
    // (h.N.attn.bias / masked_bias) ignored, tied head; F32/F16/BF16 upcast to f32. Every name,
    // shape and dtype is checked first; an unexpected or missing tensor is refused by name.
    static Gpt2Weights load(const std::filesystem::path& safetensors, const Gpt2Config& cfg);
    // Random weights for `cfg` (benchmarks of shapes with no checkpoint at hand): matrices and
    // embeddings ~ N(0, 0.02^2) (the scale GPT-2 is initialised with), LayerNorm gains 1, biases 0.
    // The same seed gives the same weights.
    static Gpt2Weights random(const Gpt2Config& cfg, uint64_t seed);
    int64_t parameter_count() const;  // distinct parameters (a tied head counted once)
    // A copy in one arena on `device` (one host-to-device copy), the matrices (wte, wpe, the four
    // per-layer weights, an untied head) in `matrices` dtype, the rest f32. The CPU takes F32 only.
    Gpt2Weights to(Device device, DType matrices = DType::F32) const;
    Device device() const { return wte.device(); }
    // Hugging Face names (with the "transformer." prefix) and tensors, for saving.
    std::vector<std::pair<std::string, Tensor>> named_tensors() const;
};

// The per-conversation cache of a GPT-2: K and V per layer for positions [0, length), plus the
// scratch buffers of one forward (grown for the largest chunk seen, never in the decode loop).
class Gpt2State final : public ModelState {
public:
    Gpt2State(const Gpt2Config& cfg, int64_t capacity, Device device = Device::cpu());
    int64_t length() const override { return length_; }
    int64_t capacity() const override { return capacity_; }
    void clear() override { length_ = 0; }
    void truncate(int64_t n) override;

    std::vector<Tensor> k, v;  // per layer [H, cap, D]
    // Scratch for a chunk of up to `rows` tokens: x, h: [rows, C]; qkv: [rows, 3C]; att: [rows, C];
    // mlp: [rows, I]; scores: [min(H, threads) * rows * cap] (CPU only); on a GPU logits: [rows, V]
    // for results that go to a host tensor.
    void reserve(int64_t rows);
    Tensor x, h, qkv, att, mlp, scores, logits;
    int64_t reserved_rows = 0;
    int64_t length_ = 0;

    // A GPU model's single-token forward (the decode step) is recorded once as a CUDA graph and
    // replayed for every later token; its token id and position travel in `step` (I32 [2] on the
    // device). Recorded again when the buffers it uses change.
    Tensor step;
    DeviceGraph decode_graph;
    int64_t graph_rows = -1, graph_reserved = -1;
    const void* graph_out = nullptr;
    int64_t decode_steps = 0;   // single-token forwards so far (the first runs without a graph)
    int64_t graph_replays = 0;  // ... of which replayed from the graph
    bool graph_failed = false;  // recording failed once: decode without graphs

private:
    const Gpt2Config* cfg_;
    int64_t capacity_;
    Device device_;
};

// How the matrices of a model are held for its forward: f32 as loaded, or bf16 (packed for the
// bf16 dot-product kernels; activations and accumulation stay f32). bf16 halves the bytes a decode
// step reads; see docs/PERFORMANCE.md for what it does to the logits.
enum class WeightFormat { F32, BF16 };
std::string_view weight_format_name(WeightFormat f);
WeightFormat weight_format_from_name(std::string_view s);  // "f32" | "bf16"; throws stac::Error

class Gpt2Model final : public LanguageModel {
public:
    // Loads DIR/config.json and DIR/model.safetensors.
    static std::unique_ptr<Gpt2Model> load(const std::filesystem::path& dir);
    Gpt2Model(Gpt2Config cfg, Gpt2Weights w);
    // The model on another device (weights uploaded once; see Gpt2Weights::to). Throws stac::Error
    // naming the device when it is missing, busy or not compiled in.
    std::unique_ptr<Gpt2Model> to(const Placement& where) const;
    Device device() const { return w_.device(); }
    // On a GPU, replay the decode step from a CUDA graph (default: on, unless the environment sets
    // STAC_CUDA_GRAPHS=0). Results are the same either way; bench_gpu measures both.
    void set_cuda_graphs(bool on) { cuda_graphs_ = on; }
    bool cuda_graphs() const { return cuda_graphs_; }

    const ModelInfo& info() const override { return info_; }
    std::unique_ptr<ModelState> new_state(int64_t capacity = 0) const override;
    void forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const override;

    const Gpt2Config& config() const { return cfg_; }
    const Gpt2Weights& weights() const { return w_; }
    // BF16 packs bf16 copies of the four matrices of every block and of the LM head (the f32
    // weights stay: embeddings, norms, biases, and the spiking conversion read them).
    void set_weight_format(WeightFormat f);
    WeightFormat weight_format() const { return format_; }

private:
    struct PackedLayer {
        Tensor attn_w, proj_w, fc_w, fc_proj_w;  // bf16 [K/2, N, 2]
    };
    // The layers and head for T tokens at positions P..; logits of the last R rows into `out` (on
    // the model's device). at_step: the single-token variants reading {id, pos} from st.step.
    void run(Gpt2State& st, std::span<const int32_t> ids, int64_t P, int64_t R, const Tensor& out, bool at_step) const;

    Gpt2Config cfg_;
    Gpt2Weights w_;
    ModelInfo info_;
    bool cuda_graphs_ = true;
    WeightFormat format_ = WeightFormat::F32;  // CPU: F32 or the packed BF16 copies below
    std::vector<PackedLayer> packed_;
    Tensor head_bf16_;  // [V, C]
};

}  // namespace stac
