// SpikingGpt2: a GPT-2 converted to a spiking network (DESIGN §5), runnable as
//   - Float: the ANN itself, with every site passing floats (calibration observes it),
//   - Qann:  the quantized network, q(x) = s * clamp(round(x / s)) at every site,
//   - Snn:   integrate-and-fire neurons at every site over S timesteps, in the layer-wise
//            schedule (spike path or count path) or the streaming schedule.
// Letters: T tokens in a chunk, P cached, L = P + T keys, C = n_embd, H heads, D head dim,
// I = n_inner, V vocabulary, S timesteps.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "convert/spiking_model.h"
#include "models/gpt2.h"

namespace stac {

class SpikingGpt2 final : public SpikingModel {
public:
    // base must be a Gpt2Model (anything else is refused by name).
    SpikingGpt2(std::shared_ptr<const LanguageModel> base, SnnSpec spec, RunOptions run = {});

    const ModelInfo& info() const override { return base_->info(); }
    std::unique_ptr<ModelState> new_state(int64_t capacity = 0) const override;
    void forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const override;

    const Gpt2Model& base() const { return *base_; }
    const LanguageModel& ann() const override { return *base_; }
    Device device() const override { return base_->device(); }
    // Every mode and schedule runs on a GPU (base weights, exact-linear weights and thresholds
    // uploaded once); moving between two GPUs goes through the CPU.
    std::unique_ptr<SpikingModel> to(Device device) const override;

private:
    void check_run_options(const RunOptions& run) const override;
    struct Layer {
        ExactLinear attn, proj, fc, fc_proj;
        Tensor qk_mult, pv_mult;  // F32 [H]: s_q s_k * attention scale, s_p s_v, per head
    };
    void forward_layerwise(std::span<const int32_t> ids, class SnnState& st, LogitRows rows, const Tensor& logits) const;
    void forward_streaming(std::span<const int32_t> ids, class SnnState& st, LogitRows rows, const Tensor& logits) const;
    void head(class SnnState& st, const Tensor& x, int64_t T, LogitRows rows, const Tensor& logits) const;
    void count_ann_macs(SpikeStats& stats, int64_t T, int64_t P, int64_t R) const;

    std::shared_ptr<const Gpt2Model> base_;
    std::vector<Layer> layers_;
    ExactLinear lm_head_;
};

}  // namespace stac
