// What every spiking model shares (DESIGN §5): run modes, schedules and paths, the spec a
// conversion produces, spike telemetry, exact integer-valued linear layers, and SpikingModel, the
// interface the spiking GPT-2 and the spiking Llama implement so that conversion, evaluation and
// every command run either without knowing which.
// Letters: T tokens, K inputs, N outputs, S timesteps, L layers.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "convert/calibration.h"
#include "convert/sites.h"
#include "kernels/math.h"
#include "models/language_model.h"

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
    std::string architecture = "gpt2";  // of the source model: "gpt2" or "llama"
    int timesteps = 16;  // S the model was converted for (RunOptions may run another S)
    int levels = 8;      // L
    Schedule schedule = Schedule::LayerWise;
    // GPT-2: may differ from the source model (GELU -> ReLU); Llama: Silu (the SiLU gate, kept)
    Activation activation = Activation::GeluTanh;
    bool per_channel = true;
    float percentile = 99.9f;
    bool simplified = false;
    SiteSet sites = SiteSet::defaults();
    // Token scaling (docs/SNN.md, "Token scaling"): the thresholds of every site but Q, K and V
    // grow or shrink per token (per probability row) so that the token's largest value lands on
    // the top count; linear layers and the attention output undo the factor. Layer-wise only.
    bool token_scale = false;
    std::vector<std::array<SiteQuant, kSiteKinds>> layers;  // [n_layer]; entries of sites that are off are unused
    SiteQuant lm_head_in;                                   // used when sites has LmHeadIn
    nlohmann::json calibration;                             // summary: samples, tokens, source
    const SiteQuant& site(int layer, SiteKind k) const {
        return k == SiteKind::LmHeadIn ? lm_head_in : layers[size_t(layer)][size_t(k)];
    }
    SiteQuant& site(int layer, SiteKind k) { return k == SiteKind::LmHeadIn ? lm_head_in : layers[size_t(layer)][size_t(k)]; }
    // Whether site k of a model with this activation is signed (counts in [-L, L]).
    bool site_signed(SiteKind k) const;
    // Whether site k is token-scaled: token_scale is on and k is not Q, K or V (whose counts are
    // cached and multiplied by per-head constants).
    bool token_scaled(SiteKind k) const {
        return token_scale && k != SiteKind::Q && k != SiteKind::K && k != SiteKind::V;
    }
};

// Spikes, synaptic operations and the MACs that remain, per layer and site (DESIGN §5). Counted
// per conversation: each state of a spiking model holds the telemetry of the forwards run on it.
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
    // What was counted after `before` was taken; all of *this when the counts started over since
    // (another shape or S).
    SpikeStats since(const SpikeStats& before) const;
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

// MACs per element of the operations that stay dense in a spiking model (telemetry).
inline constexpr int64_t kNormMacs = 5, kSoftmaxMacs = 3, kGeluMacs = 8, kSiluGateMacs = 6;

// Integer-valued weights of a linear layer fed by a spiking site: w[i][j] = round(W[i][j] *
// s_i * 2^k_j), |w| < 2^23, held as doubles so counts · w is an exact integer in any order;
// out_j = float(acc_j) * mult_j + b_j with mult_j = 2^-k_j.
struct ExactLinear {
    Tensor w;     // F64 [K, N]
    Tensor mult;  // F32 [N]
    Tensor bias;  // F32 [N] or undefined
    static ExactLinear build(const Tensor& weight /*F32 [K, N]*/, const Tensor& bias, const SiteQuant& input);
    // The LM head from its [V, C] matrix (the tied embedding or lm_head.weight), transposed to [C, V].
    static ExactLinear build_head(const Tensor& head /*F32 [V, C]*/, const SiteQuant& input);
};

// A converted model, runnable as Float (the ANN, every site passing floats; calibration observes
// it), Qann (q(x) at every site) or Snn (integrate-and-fire neurons over S timesteps).
class SpikingModel : public LanguageModel {
public:
    const SnnSpec& spec() const { return spec_; }
    const RunOptions& run_options() const { return run_; }
    // Checks and sets how the model runs (mode, schedule, path, S); a state made before a change of
    // mode cannot be used after it.
    void set_run_options(const RunOptions& run);
    // The float model it was converted from.
    virtual const LanguageModel& ann() const = 0;
    // Where it runs (its weights, thresholds and states).
    virtual Device device() const = 0;
    // A copy on `device` (weights and thresholds uploaded once), with the same run options. A GPT-2
    // runs every mode and schedule on a GPU; a Llama runs on the CPU only and refuses a GPU. Site
    // observers (calibration) run on the CPU only.
    virtual std::unique_ptr<SpikingModel> to(Device device) const = 0;
    // Telemetry of what ran on `state` (a state a spiking model made) since it was made or its
    // statistics were reset: each conversation counts its own, and the model counts nothing. A
    // forward at another S than the state's statistics were counted at starts them over.
    const SpikeStats& stats(const ModelState& state) const;
    void reset_stats(ModelState& state) const;
    // Sites observed while the model runs on `state` (Float mode: calibration); nullptr: none.
    // Observers run on the CPU only.
    void set_observer(ModelState& state, SiteObserver* o) const;

protected:
    explicit SpikingModel(SnnSpec spec) : spec_(std::move(spec)) {}
    // What this architecture cannot run (throws stac::Error naming it); called by set_run_options.
    virtual void check_run_options(const RunOptions& run) const = 0;
    // Checks every enabled site of the spec against the layout (widths, levels, signedness).
    void check_spec(const SiteLayout& layout) const;
    // Whether states made now cache K and V as counts (every mode but Float, with attention sites).
    bool count_caches() const { return run_.mode != RunMode::Float && spec_.sites.attention(); }
    // `state` as the SnnState a forward needs: made by a spiking model, for the current mode's
    // caches and on this model's device; throws stac::Error saying which is wrong otherwise.
    // Starts its statistics over when they were counted at another S.
    class SnnState& snn_state(ModelState& state) const;

    SnnSpec spec_;
    RunOptions run_;
};

// The site layout of a float model (GPT-2 or Llama); throws for any other architecture.
SiteLayout site_layout(const LanguageModel& base);
// The spiking model of `base` (a Gpt2Model or a LlamaModel) with the thresholds of `spec`.
std::unique_ptr<SpikingModel> make_spiking_model(std::shared_ptr<const LanguageModel> base, SnnSpec spec,
                                                 RunOptions run = {});

}  // namespace stac
