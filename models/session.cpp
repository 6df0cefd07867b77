#include "models/session.h"

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace stac {

void check_forward_args(const ModelInfo& info, std::span<const int32_t> ids, int64_t P, int64_t capacity,
                        LogitRows rows, const Tensor& logits, const char* who) {
    const int64_t T = int64_t(ids.size()), R = logit_row_count(rows, T);
    if (T == 0) fail("{} forward: empty chunk", who);
    if (P + T > capacity) fail("chunk of {} tokens at position {} does not fit the context of {} tokens", T, P, capacity);
    for (int32_t id : ids)
        if (id < 0 || id >= info.vocab_size) fail("token id {} is outside the vocabulary [0, {})", id, info.vocab_size);
    if (R > 0 && (!(logits.shape() == Shape{R, info.vocab_size}) || logits.dtype() != DType::F32))
        fail("{} forward: logits tensor {} should be F32[{}, {}]", who, logits.describe(), R, info.vocab_size);
}

Session::Session(const LanguageModel& model, int64_t max_context) : model_(&model) {
    const int64_t n = model.info().n_positions;
    if (max_context < 0) fail("max context {} is negative", max_context);
    if (max_context > n) fail("max context {} exceeds the model's n_positions = {}", max_context, n);
    max_context_ = max_context == 0 ? n : max_context;
    state_ = model.new_state(max_context_);
    tokens_.reserve(size_t(max_context_));
    window_.reserve(size_t(max_context_));
    logits_ = Tensor::empty({1, model.info().vocab_size}, DType::F32);
}

FeedResult Session::feed(std::span<const int32_t> ids) { return feed_impl(ids, nullptr); }

FeedResult Session::feed_all(std::span<const int32_t> ids, const Tensor& all_logits) {
    const int64_t T = int64_t(ids.size()), V = model_->info().vocab_size;
    if (!(all_logits.shape() == Shape{T, V}) || all_logits.dtype() != DType::F32)
        fail("session: logits tensor {} should be F32[{}, {}]", all_logits.describe(), T, V);
    return feed_impl(ids, &all_logits);
}

FeedResult Session::feed_impl(std::span<const int32_t> ids, const Tensor* all) {
    if (ids.empty()) fail("cannot feed an empty chunk");
    const int64_t V = model_->info().vocab_size, T = int64_t(ids.size());
    for (int32_t id : ids)
        if (id < 0 || id >= V) fail("token id {} is outside the vocabulary [0, {})", id, V);
    FeedResult r;
    const int64_t total = position() + T;
    if (total <= max_context_) {
        if (all) {
            model_->forward(ids, *state_, LogitRows::All, *all);
            std::copy(all->data<float>() + (T - 1) * V, all->data<float>() + T * V, logits_.data<float>());
        } else {
            model_->forward(ids, *state_, LogitRows::Last, logits_);
        }
        tokens_.insert(tokens_.end(), ids.begin(), ids.end());
    } else {
        // Keep the newest max_context tokens of history + ids and re-encode them from position 0.
        const int64_t drop = total - max_context_;
        window_.clear();
        if (drop < position()) window_.insert(window_.end(), tokens_.begin() + drop, tokens_.end());
        const int64_t skip_new = std::max<int64_t>(0, drop - position());
        window_.insert(window_.end(), ids.begin() + skip_new, ids.end());
        state_->clear();
        tokens_.clear();
        has_logits_ = false;
        const int64_t W = int64_t(window_.size());
        if (all) {
            // Rows of the window; the new tokens are its last T - skip_new rows.
            Tensor win = Tensor::empty({W, V}, DType::F32);
            model_->forward(window_, *state_, LogitRows::All, win);
            float* out = all->data<float>();
            std::fill(out, out + skip_new * V, std::numeric_limits<float>::quiet_NaN());
            std::copy(win.data<float>() + (W - (T - skip_new)) * V, win.data<float>() + W * V, out + skip_new * V);
            std::copy(win.data<float>() + (W - 1) * V, win.data<float>() + W * V, logits_.data<float>());
        } else {
            model_->forward(window_, *state_, LogitRows::Last, logits_);
        }
        tokens_.assign(window_.begin(), window_.end());
        r.dropped = drop;
        r.reencoded = W;
    }
    has_logits_ = true;
    return r;
}

std::span<const float> Session::logits() const {
    if (!has_logits_) fail("no logits yet: feed the session first");
    return {logits_.data<float>(), size_t(logits_.numel())};
}

void Session::rewind(int64_t n) {
    if (n < 0 || n > position()) fail("cannot rewind a session of {} tokens to {}", position(), n);
    state_->truncate(n);
    tokens_.resize(size_t(n));
    has_logits_ = false;
}

void Session::reset() {
    state_->clear();
    tokens_.clear();
    has_logits_ = false;
}

Session& Conversations::get(int64_t id) {
    auto it = slots_.find(id);
    if (it == slots_.end()) it = slots_.emplace(id, std::make_unique<Session>(*model_, max_context_)).first;
    return *it->second;
}

const Session* Conversations::find(int64_t id) const {
    const auto it = slots_.find(id);
    return it == slots_.end() ? nullptr : it->second.get();
}

void Conversations::reset(int64_t id) { slots_.erase(id); }

}  // namespace stac
