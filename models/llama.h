// Llama-architecture models (SmolLM2, Llama 2/3 without rope scaling): config.json, weights from
// a Hugging Face checkpoint or any WeightSource (one f32 arena), and the CPU forward.
// Letters: T tokens in a chunk, P tokens already cached, C = hidden_size, H query heads, G
// key/value heads (H a multiple of G: grouped-query attention), D = C/H head dim, I =
// intermediate_size, V vocabulary, L layers, cap cache capacity.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "core/weight_source.h"
#include "models/language_model.h"

namespace stac {

struct LlamaConfig {
    int64_t n_layer = 0;          // num_hidden_layers
    int64_t hidden = 0;           // hidden_size (C)
    int64_t n_head = 0;           // num_attention_heads (H)
    int64_t n_kv_head = 0;        // num_key_value_heads (G; absent: H)
    int64_t intermediate = 0;     // intermediate_size (I)
    int64_t n_positions = 0;      // max_position_embeddings
    int64_t vocab_size = 0;
    float rope_theta = 10000.0f;
    float rms_norm_eps = 1e-6f;
    bool tie_word_embeddings = false;  // transformers' LlamaConfig default
    int64_t bos_token_id = -1, eos_token_id = -1;  // -1: none given

    int64_t head_dim() const { return hidden / n_head; }
    int64_t group() const { return n_head / n_kv_head; }
    int64_t qkv_width() const { return (n_head + 2 * n_kv_head) * head_dim(); }

    // Reads and checks a Hugging Face Llama config.json; `source` names the file in errors.
    // Refuses what stac does not compute (rope_scaling, attention/MLP biases, activations other
    // than silu, interleaved rope) rather than running it wrongly.
    static LlamaConfig from_json(const nlohmann::json& j, const std::string& source);
    static LlamaConfig load(const std::filesystem::path& config_json);
    nlohmann::json to_json() const;  // as transformers' LlamaConfig writes it
    void validate(const std::string& source) const;
};

// Views into one f32 arena. The projections are stored transposed to [in, out] for
// kernels::linear, and fused: q | k | v into one [C, (H + 2G) D] matrix, gate | up into [C, 2I].
struct LlamaLayer {
    Tensor attn_norm;  // [C]
    Tensor wqkv;       // [C, (H + 2G) D]
    Tensor wo;         // [H D, C]
    Tensor mlp_norm;   // [C]
    Tensor w_gate_up;  // [C, 2I]
    Tensor w_down;     // [I, C]
};

struct LlamaWeights {
    Tensor embed;  // [V, C]
    std::vector<LlamaLayer> layers;
    Tensor norm;     // [C]
    Tensor lm_head;  // [V, C]: embed itself when tied
    std::shared_ptr<Storage> arena;
    std::string source_dtype;  // dtype(s) found in the source, e.g. "BF16" or "F32+Q4_1+Q8_0"

    // Loads the Hugging Face names (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight,
    // ..., model.norm.weight, lm_head.weight) from `src` for `cfg`. Every name, shape and dtype is
    // checked before anything is converted; a missing or unexpected tensor is refused by name.
    // rotary_emb.inv_freq buffers (older checkpoints) are ignored. A tied head is embed; an untied
    // config needs lm_head.weight; a tied config with an lm_head.weight equal to embed is accepted.
    static LlamaWeights load(const WeightSource& src, const LlamaConfig& cfg);
    int64_t parameter_count() const;  // distinct parameters (a tied head counted once)
    // A copy on `device` (f32; a tied head stays tied), or *this when it is there already.
    LlamaWeights to(Device device) const;
    Device device() const { return embed.device(); }
};

// The per-conversation cache: K and V of the G key/value heads per layer, and a forward's scratch.
class LlamaState final : public ModelState {
public:
    LlamaState(const LlamaConfig& cfg, int64_t capacity, Device device = Device::cpu());
    int64_t length() const override { return length_; }
    int64_t capacity() const override { return capacity_; }
    void clear() override { length_ = 0; }
    void truncate(int64_t n) override;

    std::vector<Tensor> k, v;  // per layer [G, cap, D]
    // Scratch for a chunk of up to `rows` tokens: x, h: [rows, C]; qkv: [rows, (H + 2G) D];
    // att: [rows, H D]; gu: [rows, 2I]; mlp: [rows, I]; scores: [min(H, threads) * rows * cap] (CPU);
    // logits: [rows, V] on a GPU, where a forward writing host logits computes them first.
    void reserve(int64_t rows);
    Tensor x, h, qkv, att, gu, mlp, scores, logits;
    int64_t reserved_rows = 0;
    int64_t length_ = 0;

    Device device() const { return device_; }

private:
    const LlamaConfig* cfg_;
    int64_t capacity_;
    Device device_;
};

class LlamaModel final : public LanguageModel {
public:
    // Loads DIR/config.json and DIR/model.safetensors (or the shards of model.safetensors.index.json).
    static std::unique_ptr<LlamaModel> load(const std::filesystem::path& dir);
    LlamaModel(LlamaConfig cfg, LlamaWeights w);

    const ModelInfo& info() const override { return info_; }
    std::unique_ptr<ModelState> new_state(int64_t capacity = 0) const override;
    void forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const override;

    const LlamaConfig& config() const { return cfg_; }
    const LlamaWeights& weights() const { return w_; }
    Device device() const { return w_.device(); }
    // The model on `device` (f32 weights; the GPU kernels: RMSNorm, RoPE, grouped-query attention,
    // the SiLU gate; a GPU needs a CUDA build).
    std::unique_ptr<LlamaModel> to(Device device) const;

private:
    LlamaConfig cfg_;
    LlamaWeights w_;
    ModelInfo info_;
};

}  // namespace stac
