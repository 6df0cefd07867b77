// TemporalSpikeProcessor: runs a spiking model (GPT-2 or Llama) over S timesteps per chunk of tokens for
// multi-turn conversations: per-conversation caches (batch ids, held as Conversations), exact
// positions that continue across turns, the context-window policy of DESIGN §4, and the spike
// statistics of every call and of every conversation.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "convert/spiking_model.h"
#include "models/session.h"

namespace stac {

struct TspOutput {
    Tensor logits;                      // [rows, V]: the last token, or every fed token
    SpikeStats stats;                   // spikes, synaptic operations, energy of this call
    std::vector<int32_t> position_ids;  // positions the fed tokens got (after a window move: in the new window)
    FeedResult window;                  // whether the context window moved
};

class TemporalSpikeProcessor {
public:
    // max_context_length: 0 = the model's n_positions.
    explicit TemporalSpikeProcessor(std::shared_ptr<const SpikingModel> snn, int64_t max_context_length = 0);

    // Runs `ids` for conversation `batch_id`. attention_mask (optional, one entry per id) marks
    // padding with 0: those tokens are left out, as if never sent. use_cache = false runs the
    // chunk alone on a fresh cache (the conversation's cache is neither read nor changed).
    // The output's statistics are what this call counted on the state it ran on: another
    // conversation's calls, or another processor's on the same model, never enter them.
    TspOutput forward(std::span<const int32_t> ids, std::span<const uint8_t> attention_mask = {}, bool use_cache = true,
                      int64_t batch_id = 0, LogitRows rows = LogitRows::Last);

    void reset_cache(int64_t batch_id) { conversations_.reset(batch_id); }
    void reset_all() { conversations_.clear(); }
    // Positions of the tokens in the conversation's cache: 0 .. length - 1.
    std::vector<int32_t> position_ids(int64_t batch_id) const;
    int64_t cache_length(int64_t batch_id) const;
    // What the conversation's cached calls counted since it began (or was reset); empty counts
    // when there is no such conversation.
    SpikeStats stats(int64_t batch_id) const;
    int64_t max_context_length() const { return max_context_; }
    int timesteps() const { return snn_->run_options().timesteps; }
    size_t conversations() const { return conversations_.size(); }

private:
    std::shared_ptr<const SpikingModel> snn_;
    int64_t max_context_;
    Conversations conversations_;
};

}  // namespace stac
