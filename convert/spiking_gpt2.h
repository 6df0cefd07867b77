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

#include "convert/calibration.h"
#include "convert/sites.h"
#include "models/gpt2.h"

namespace stac {

// Largest L: counts are int8.
int spiking_max_levels();

enum class RunMode { Float, Qann, Snn };
enum class Schedule { LayerWise, Streaming };
enum class SpikePath { Spike, Count };
std::string_view run_mode_name(RunMode m);
std::string_view schedule_name(Schedule s);
std::string_view spike_path_name(SpikePath p);
Schedule schedule_from_name(std::string_view s);  // throws stac::Error
SpikePath spike_path_from_name(std::string_view s);

struct RunOptions {
    RunMode mode = RunMode::Snn;
    Schedule schedule = Schedule::LayerWise;
    SpikePath path = SpikePath::Spike;
    int timesteps = 16;
};

// What a conversion decided: which sites spike, their bounds and thresholds.
struct SnnSpec {
    int timesteps = 16;  // S the model was converted for (RunOptions may run another S)
    int levels = 8;      // L
    Schedule schedule = Schedule::LayerWise;
    Activation activation = Activation::GeluTanh;  // may differ from the source model (GELU -> ReLU)
    bool per_channel = true;
    float percentile = 99.9f;
    bool simplified = false;
    SiteSet sites = SiteSet::defaults();
    std::vector<std::array<SiteQuant, kSiteKinds>> layers;  // [n_layer]; entries of sites that are off are unused
    SiteQuant lm_head_in;                                   // used when sites has LmHeadIn
    nlohmann::json calibration;                             // summary: samples, tokens, source
    const SiteQuant& site(int layer, SiteKind k) const {
        return k == SiteKind::LmHeadIn ? lm_head_in : layers[size_t(layer)][size_t(k)];
    }
    SiteQuant& site(int layer, SiteKind k) { return k == SiteKind::LmHeadIn ? lm_head_in : layers[size_t(layer)][size_t(k)]; }
    // Whether site k of a model with this activation is signed (counts in [-L, L]).
    bool site_signed(SiteKind k) const;
};

// Spikes, synaptic operations and the MACs that remain, per layer and site (DESIGN §5).
struct SiteTelemetry {
    int64_t neurons = 0;  // neurons that ran (each for S steps)
    int64_t spikes = 0;   // spike events, +1 and -1 alike
    int64_t synops = 0;   // accumulate operations driven by those spikes (spikes x fan-out)
};

struct SpikeStats {
    int timesteps = 0;
    int64_t tokens = 0;
    std::vector<std::array<SiteTelemetry, kSiteKinds>> layers;  // [n_layer + 1]: the last row holds the LM head input
    int64_t snn_macs = 0;  // multiply-accumulates the spiking model still does (norms, softmax, GELU, dequantization, float head)
    int64_t ann_macs = 0;  // what the float ANN does for the same tokens

    void reset(int n_layer, int S);
    void add(const SpikeStats& o);
    SpikeStats since(const SpikeStats& before) const;  // what was counted after `before` was taken
    int64_t total_spikes() const;
    int64_t total_synops() const;
    int64_t total_neurons() const;
    double firing_rate() const;  // spikes / (neurons * S)
    double snn_energy_joules() const;  // snn_macs * 4.6 pJ + synops * 0.9 pJ (45 nm, Horowitz 2014)
    double ann_energy_joules() const;  // ann_macs * 4.6 pJ
    nlohmann::json to_json(bool per_site) const;

private:
    int64_t total(int64_t SiteTelemetry::*field) const;
};

// Integer-valued weights of a linear layer fed by a spiking site: w[i][j] = round(W[i][j] *
// s_i * 2^k_j), |w| < 2^23, held as doubles so counts · w is an exact integer in any order;
// out_j = float(acc_j) * mult_j + b_j with mult_j = 2^-k_j.
struct ExactLinear {
    Tensor w;     // F64 [K, N]
    Tensor mult;  // F32 [N]
    Tensor bias;  // F32 [N] or undefined
    static ExactLinear build(const Tensor& weight /*F32 [K, N]*/, const Tensor& bias, const SiteQuant& input);
};

class SpikingGpt2 final : public LanguageModel {
public:
    SpikingGpt2(std::shared_ptr<const Gpt2Model> base, SnnSpec spec, RunOptions run = {});

    const ModelInfo& info() const override { return base_->info(); }
    std::unique_ptr<ModelState> new_state(int64_t capacity = 0) const override;
    void forward(std::span<const int32_t> ids, ModelState& state, LogitRows rows, const Tensor& logits) const override;

    const SnnSpec& spec() const { return spec_; }
    const Gpt2Model& base() const { return *base_; }
    const RunOptions& run_options() const { return run_; }
    // A copy on `device` (base weights, exact-linear weights, thresholds uploaded once). Every
    // mode and schedule runs there; site observers (calibration) are CPU only and refused on a GPU.
    std::unique_ptr<SpikingGpt2> to(Device device) const;
    Device device() const { return base_->device(); }
    // Checks and sets how the model runs (mode, schedule, path, S); a state made before a change of
    // mode cannot be used after it.
    void set_run_options(const RunOptions& run);
    // Sites observed while the model runs (Float mode: calibration).
    void set_observer(SiteObserver* o) const { observer_ = o; }
    // Telemetry of everything run since the last reset.
    SpikeStats& stats() const { return stats_; }
    void reset_stats() const;

private:
    struct Layer {
        ExactLinear attn, proj, fc, fc_proj;
        Tensor qk_mult, pv_mult;  // F32 [H]: s_q s_k * attention scale, s_p s_v, per head
    };
    void forward_layerwise(std::span<const int32_t> ids, class SnnState& st, LogitRows rows, const Tensor& logits) const;
    void forward_streaming(std::span<const int32_t> ids, class SnnState& st, LogitRows rows, const Tensor& logits) const;
    void head(class SnnState& st, const Tensor& x, int64_t T, LogitRows rows, const Tensor& logits) const;
    void count_ann_macs(int64_t T, int64_t P, int64_t R) const;

    std::shared_ptr<const Gpt2Model> base_;
    SnnSpec spec_;
    RunOptions run_;
    std::vector<Layer> layers_;
    ExactLinear lm_head_;
    mutable SiteObserver* observer_ = nullptr;
    mutable SpikeStats stats_;
};

}  // namespace stac
