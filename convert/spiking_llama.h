// SpikingLlama: a Llama-architecture model (SmolLM2) converted to a spiking network (DESIGN §5),
// runnable as Float (the ANN; calibration observes it), Qann or Snn in the layer-wise schedule
// (spike path or count path), on the CPU. The streaming schedule is not built for Llama and is
// refused, and so is a GPU.
//
// Sites per layer (the GPT-2 names, docs/SNN.md): attn_in = input of the fused q|k|v projection
// (after input_layernorm), q and k = queries and keys *after* the rotary embedding, v, probs,
// attn_out = input of o_proj, mlp_in = input of the fused gate|up projection (after
// post_attention_layernorm), mlp_act = silu(gate) * up (input of down_proj); optionally lm_head_in.
// Q and K spike after RoPE because the scores must be integer products of counts times one
// constant per head; RoPE is linear per position, so rotating the summed q of a token equals
// summing its rotated increments, and a cached key's rotation (at its own position) is done once.
// RMSNorm, softmax and the SiLU-gate product are float operators on the summed (bit-identical)
// inputs — the layer-wise form of the temporal-difference operators.
// Letters: T tokens in a chunk, P cached, C hidden, H query heads, G key/value heads, D head dim,
// I intermediate, V vocabulary, S timesteps.
#pragma once

#include <memory>
#include <vector>

#include "convert/spiking_model.h"
#include "models/llama.h"

namespace stac {

class SpikingLlama final : public SpikingModel {
public:
    // base must be a LlamaModel (anything else is refused by name).
    SpikingLlama(std::shared_ptr<const LanguageModel> base, SnnSpec spec, RunOptions run = {});

    const ModelInfo& info() const override { return base_->info(); }
    std::unique_ptr<ModelState> new_state(int64_t capacity = 0) const override;
    void forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const override;

    const LlamaModel& base() const { return *base_; }
    const LanguageModel& ann() const override { return *base_; }
    Device device() const override { return Device::cpu(); }
    // A copy on the CPU; any other device is refused (a spiking Llama runs on the CPU only).
    std::unique_ptr<SpikingModel> to(Device device) const override;

private:
    void check_run_options(const RunOptions& run) const override;
    void count_ann_macs(SpikeStats& stats, int64_t T, int64_t P, int64_t R) const;
    struct Layer {
        ExactLinear qkv, o, gate_up, down;
        Tensor qk_mult, pv_mult;  // F32 [H]: s_q(h) s_k(g) / sqrt(D), s_p s_v(g)
    };
    std::shared_ptr<const LlamaModel> base_;
    std::vector<Layer> layers_;
    ExactLinear lm_head_;
};

}  // namespace stac
