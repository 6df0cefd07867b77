#include "convert/temporal_spike_processor.h"

#include <algorithm>
#include <optional>

#include "core/error.h"

namespace stac {

namespace {
int64_t checked_max_context(const SpikingModel& snn, int64_t max_context_length) {
    const int64_t n = snn.info().n_positions;
    if (max_context_length < 0 || max_context_length > n)
        fail("max_context_length {} out of range [0, {}]", max_context_length, n);
    return max_context_length == 0 ? n : max_context_length;
}
}  // namespace

TemporalSpikeProcessor::TemporalSpikeProcessor(std::shared_ptr<const SpikingModel> snn, int64_t max_context_length)
    : snn_(std::move(snn)),
      max_context_(checked_max_context(*snn_, max_context_length)),
      conversations_(*snn_, max_context_) {}

TspOutput TemporalSpikeProcessor::forward(std::span<const int32_t> ids, std::span<const uint8_t> mask, bool use_cache,
                                          int64_t batch_id, LogitRows rows) {
    if (!mask.empty() && mask.size() != ids.size())
        fail("attention_mask has {} entries for {} ids", mask.size(), ids.size());
    std::vector<int32_t> kept;
    kept.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); ++i)
        if (mask.empty() || mask[i]) kept.push_back(ids[i]);
    if (kept.empty()) fail("nothing to run: every token is masked out");
    const int64_t T = int64_t(kept.size()), V = snn_->info().vocab_size;

    TspOutput out;
    Tensor all = Tensor::empty({T, V}, DType::F32);
    std::optional<Session> alone;
    Session& s = use_cache ? conversations_.get(batch_id) : alone.emplace(*snn_, max_context_);
    const SpikeStats before = snn_->stats(s.state());
    out.window = s.feed_all(kept, all);
    for (int64_t p = s.position() - T; p < s.position(); ++p) out.position_ids.push_back(int32_t(std::max<int64_t>(p, -1)));
    out.logits = rows == LogitRows::All ? all : all.slice_rows(T - 1, T);
    out.stats = snn_->stats(s.state()).since(before);  // this call's statistics: its own state's counts
    return out;
}

int64_t TemporalSpikeProcessor::cache_length(int64_t batch_id) const {
    const Session* s = conversations_.find(batch_id);
    return s ? s->position() : 0;
}

std::vector<int32_t> TemporalSpikeProcessor::position_ids(int64_t batch_id) const {
    std::vector<int32_t> p(size_t(cache_length(batch_id)));
    for (size_t i = 0; i < p.size(); ++i) p[i] = int32_t(i);
    return p;
}

SpikeStats TemporalSpikeProcessor::stats(int64_t batch_id) const {
    if (const Session* s = conversations_.find(batch_id)) return snn_->stats(s->state());
    SpikeStats none;
    none.reset(int(snn_->spec().layers.size()), timesteps());
    return none;
}

}  // namespace stac
