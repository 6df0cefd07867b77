// Fidelity of a quantized or spiking model against its float ANN over a text: perplexity, top-1
// agreement, KL divergence, and the largest logit difference against a reference (the QANN); and
// the spikes the SNN fired doing it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "convert/spiking_model.h"
#include "models/language_model.h"

namespace stac {

// Consecutive non-overlapping windows of `window` tokens (the last may be shorter; windows of
// one token are dropped: they score nothing).
std::vector<std::vector<int32_t>> text_windows(std::span<const int32_t> ids, int64_t window);

struct Fidelity {
    int64_t positions = 0;  // logit rows compared
    int64_t scored = 0;     // next-token predictions scored for perplexity (all but the first of a window)
    double nll = 0;         // sum of -log p(next token)
    int64_t agree = 0;      // rows whose argmax equals the ANN's
    double kl = 0;          // sum over rows of KL(ANN || model), nats
    float max_abs_vs_ref = 0;  // largest |logit - reference logit| (when a reference was given)
    double seconds = 0;

    double perplexity() const;
    double agreement() const;
    double mean_kl() const;
    nlohmann::json to_json() const;
};

struct Evaluation {
    Fidelity ann;                  // the ANN against itself: its perplexity
    std::optional<Fidelity> qann;  // against the ANN
    std::optional<Fidelity> snn;   // against the ANN, with max_abs_vs_ref against the QANN (when given)
    SpikeStats spikes;             // the SNN's telemetry, summed over the states of its windows
};

// Runs the models over every window (fresh caches, one batched pass per window). `progress`
// shows a bar on stderr.
Evaluation evaluate(const LanguageModel& ann, const LanguageModel* qann, const SpikingModel* snn,
                    const std::vector<std::vector<int32_t>>& windows, bool progress);

}  // namespace stac
