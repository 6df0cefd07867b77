// The ANN -> SNN pipeline (DESIGN §5): activation choice, calibration data and statistics,
// thresholds, timestep calibration, and the SNN directory (DESIGN §3) saved and loaded.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "convert/spiking_gpt2.h"
#include "convert/spiking_llama.h"
#include "models/tokenizer.h"

namespace stac {

struct ConvertOptions {
    int timesteps = 16;                   // S
    int levels = 8;                       // L
    std::optional<Activation> activation; // unset: keep the model's; Relu: the prototype's replace_gelu_with_relu (GPT-2 only)
    bool per_channel = true;              // --granularity channel|tensor
    float percentile = 99.9f;             // of |x|, per site (100: the maximum)
    SiteSet sites = SiteSet::defaults();
    // Token scaling (SnnSpec::token_scale); unset: on for Llama models (whose outlier activations
    // static thresholds clip), off for GPT-2.
    std::optional<bool> token_scale;
    Schedule schedule = Schedule::LayerWise;
    std::optional<std::filesystem::path> calib_file;
    int num_samples = 128;
    int max_length = 128;
    bool simplified = false;  // thresholds from the weights alone, no calibration data (lower fidelity; GPT-2 only)
    bool progress = true;     // a progress bar on stderr
};

// Converts `base` (a GPT-2 or a Llama): runs calibration (unless simplified) and returns the spec
// of the SNN. `tok` is needed for calibration (the built-in prompts and --calib are text).
SnnSpec convert_model(const std::shared_ptr<const LanguageModel>& base, const Tokenizer* tok, const ConvertOptions& opt);

// The same from token sequences already at hand (what convert_model runs after tokenizing).
SnnSpec convert_model_on(const std::shared_ptr<const LanguageModel>& base, const std::vector<std::vector<int32_t>>& data,
                         const ConvertOptions& opt);

// Thresholds from collected statistics (clip = the percentile of |x|, per tensor or channel).
SnnSpec spec_from_calibration(const SiteLayout& layout, const Calibrator& cal, const ConvertOptions& opt);
// Thresholds estimated from the weights (LayerNorm gains and biases, 3-sigma of the projections); GPT-2 only.
SnnSpec simplified_spec(const Gpt2Model& base, const ConvertOptions& opt);

// Changes the timesteps of a converted SNN. S >= L keeps the layer-wise SNN equal to its QANN;
// for S < L the levels drop to S and every threshold grows by L/S: the returned text says so
// (empty when nothing is lost).
std::string calibrate_timesteps(SnnSpec& spec, int timesteps);
// Changes the levels L (thresholds = clip / L); S is raised to L if it was below.
void set_levels(SnnSpec& spec, int levels);

// Writes the SNN directory: the source model's files (config.json, model.safetensors or the
// shards of model.safetensors.index.json, the tokenizer and generation files) plus
// snn_config.json and snn.safetensors. Refuses to overwrite a directory that holds something
// other than a previous SNN.
void save_snn_model(const std::filesystem::path& out_dir, const std::filesystem::path& source_dir, const SnnSpec& spec);

bool is_snn_dir(const std::filesystem::path& dir);

struct LoadedSnn {
    std::shared_ptr<const LanguageModel> base;  // the float model (Gpt2Model or LlamaModel)
    SnnSpec spec;
    // The spiking model of base with spec, run as `run`.
    std::unique_ptr<SpikingModel> make(const RunOptions& run) const { return make_spiking_model(base, spec, run); }
};
// Loads and checks an SNN directory: every name, shape and value of snn.safetensors, the config,
// and that the weights are the ones it was converted from (sha256).
LoadedSnn load_snn_model(const std::filesystem::path& dir);

// The sha256 an SNN directory records for the weights of model directory `dir`: that of
// model.safetensors, or for a sharded checkpoint one over the index and every shard.
std::string source_weights_sha256(const std::filesystem::path& dir);

std::string activation_name(Activation a);  // "gelu_new", "gelu", "relu", "silu"

}  // namespace stac
