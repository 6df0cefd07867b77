#include "convert/temporal_spike_processor.h"

#include "core/error.h"

namespace stac {

TemporalSpikeProcessor::TemporalSpikeProcessor(std::shared_ptr<const SpikingModel> snn, int64_t max_context_length)
    : snn_(std::move(snn)) {
    const int64_t n = snn_->info().n_positions;
    if (max_context_length < 0 || max_context_length > n)
        fail("max_context_length {} out of range [0, {}]", max_context_length, n);
    max_context_ = max_context_length == 0 ? n : max_context_length;
}

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

    const SpikeStats before = snn_->stats();
    TspOutput out;
    Tensor all = Tensor::empty({T, V}, DType::F32);
    if (use_cache) {
        auto it = sessions_.find(batch_id);
        if (it == sessions_.end()) it = sessions_.emplace(batch_id, std::make_unique<Session>(*snn_, max_context_)).first;
        Session& s = *it->second;
        out.window = s.feed_all(kept, all);
        for (int64_t p = s.position() - T; p < s.position(); ++p) out.position_ids.push_back(int32_t(std::max<int64_t>(p, -1)));
    } else {
        Session s(*snn_, max_context_);
        out.window = s.feed_all(kept, all);
        for (int64_t p = s.position() - T; p < s.position(); ++p) out.position_ids.push_back(int32_t(std::max<int64_t>(p, -1)));
    }
    out.logits = rows == LogitRows::All ? all : all.slice_rows(T - 1, T);
    out.stats = snn_->stats().since(before);  // this call's statistics
    return out;
}

void TemporalSpikeProcessor::reset_cache(int64_t batch_id) { sessions_.erase(batch_id); }

int64_t TemporalSpikeProcessor::cache_length(int64_t batch_id) const {
    const auto it = sessions_.find(batch_id);
    return it == sessions_.end() ? 0 : it->second->position();
}

std::vector<int32_t> TemporalSpikeProcessor::position_ids(int64_t batch_id) const {
    std::vector<int32_t> p(size_t(cache_length(batch_id)));
    for (size_t i = 0; i < p.size(); ++i) p[i] = int32_t(i);
    return p;
}

}  // namespace stac
