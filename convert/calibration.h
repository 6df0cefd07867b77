// Calibration: the prompts a conversion runs through the float model, and the statistics it
// collects at every spiking site (max and percentiles of |x|, per tensor and per channel).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

#include "convert/sites.h"
#include "models/chat.h"
#include "models/tokenizer.h"

namespace stac {

// Sees the values at each site while a model runs (x: [rows, cols] row-major).
class SiteObserver {
public:
    virtual ~SiteObserver() = default;
    virtual void observe(int layer, SiteKind site, const float* x, int64_t rows, int64_t cols) = 0;
};

// Counts of |x| on log2-spaced bins (bins_per_octave per octave, 2^-24 .. 2^16), plus the exact
// maximum. percentile(p) returns the upper edge of the bin holding the p-th percentile, capped at
// the maximum; percentile(100) is the maximum. Relative resolution: 2^(1/bins_per_octave) - 1.
class AbsHistogram {
public:
    explicit AbsHistogram(int bins_per_octave = 64);
    void add(float a);
    void merge(const AbsHistogram& o);
    float percentile(double p) const;
    float max() const { return max_; }
    uint64_t count() const { return count_; }

private:
    static constexpr int kMinExp = -24, kMaxExp = 16;
    int per_octave_;
    std::vector<uint32_t> bins_;
    uint64_t zeros_ = 0, count_ = 0;
    float max_ = 0.0f;
};

// What one site of one layer saw: the whole tensor, and each channel (column).
struct SiteStats {
    AbsHistogram tensor{64};
    std::vector<AbsHistogram> channels;  // empty until the first observation
};

// Collects SiteStats for every (layer, site). Values of unsigned sites count as max(x, 0).
class Calibrator final : public SiteObserver {
public:
    Calibrator(int n_layer, bool per_channel);
    void observe(int layer, SiteKind site, const float* x, int64_t rows, int64_t cols) override;
    const SiteStats& stats(int layer, SiteKind site) const;  // layer -1: the LM head input
    bool seen(int layer, SiteKind site) const;
    uint64_t tokens = 0;  // calibration tokens run

private:
    SiteStats& at(int layer, SiteKind site);
    int n_layer_;
    bool per_channel_;
    std::vector<SiteStats> stats_;  // [(n_layer + 1) * kSiteKinds]
};

// The built-in calibration prompts (varied English), tokenized; for a tokenizer with a chat
// template (ChatML: chat_format_for), the same prompts again as conversations in that template
// (builtin_chat_messages), so that calibration sees what a chat feeds the model (its system
// message, role headers and special tokens); then samples from `file` (split at blank lines, or at
// lines if it has none). Each sample is cut to max_length tokens; at most num_samples samples in
// all (built-in first, then the file). Throws if nothing is left.
std::vector<std::vector<int32_t>> create_calibration_data(const Tokenizer& tok,
                                                          const std::optional<std::filesystem::path>& file,
                                                          int num_samples, int max_length);
const std::vector<const char*>& builtin_calibration_prompts();
// A built-in prompt as a chat: the default system message, then "User: X\nAssistant: Y" as a user
// and an assistant message, any other prompt as one user message.
std::vector<ChatMessage> builtin_chat_messages(std::string_view prompt);

}  // namespace stac
