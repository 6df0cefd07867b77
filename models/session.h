// Conversations over a LanguageModel: one cache slot each, positions that continue across turns,
// the context-window policy of DESIGN §4, and several conversations side by side.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "models/language_model.h"

namespace stac {

// What one feed did to the window.
struct FeedResult {
    int64_t dropped = 0;    // oldest tokens dropped to fit max_context (0: none)
    int64_t reencoded = 0;  // tokens re-encoded from position 0 after a drop
    bool window_shifted() const { return dropped > 0; }
};

class Session {
public:
    // max_context: most tokens kept (0: the model's n_positions; never more).
    explicit Session(const LanguageModel& model, int64_t max_context = 0);

    // Appends `ids` (positions continue from position()), runs only them through the model (one
    // batched pass) and keeps the logits of the last one. When the window would pass max_context,
    // keeps the newest max_context tokens of history + ids, drops the rest and re-encodes the kept
    // window from position 0 (reported in the result). Throws stac::Error, state unchanged, on bad ids.
    FeedResult feed(std::span<const int32_t> ids);
    // The same, also writing the logits of every fed token into all_logits: [ids.size(), V]. When
    // the window moves and some of the new tokens themselves are dropped, their rows are NaN.
    FeedResult feed_all(std::span<const int32_t> ids, const Tensor& all_logits);

    std::span<const float> logits() const;           // [V] of the last token fed
    std::span<const int32_t> tokens() const { return tokens_; }  // the window, token at position i
    int64_t position() const { return static_cast<int64_t>(tokens_.size()); }
    int64_t max_context() const { return max_context_; }
    // Keep only the first n tokens (positions are absolute, so the cache stays exact).
    void rewind(int64_t n);
    void reset();
    const LanguageModel& model() const { return *model_; }
    ModelState& state() { return *state_; }
    const ModelState& state() const { return *state_; }

private:
    const LanguageModel* model_;
    int64_t max_context_;
    std::unique_ptr<ModelState> state_;
    std::vector<int32_t> tokens_;  // reserved to max_context: the decode loop does not allocate
    std::vector<int32_t> window_;  // scratch for a window shift
    Tensor logits_;                // [1, V]
    FeedResult feed_impl(std::span<const int32_t> ids, const Tensor* all_logits);
    bool has_logits_ = false;
};

// Several conversations side by side, each in its own slot (the prototype's batch_ids).
class Conversations {
public:
    explicit Conversations(const LanguageModel& model, int64_t max_context = 0)
        : model_(&model), max_context_(max_context) {}
    Session& get(int64_t id);  // made on first use
    const Session* find(int64_t id) const;  // nullptr when there is none
    bool contains(int64_t id) const { return slots_.count(id) != 0; }
    void reset(int64_t id);    // frees the slot
    void clear() { slots_.clear(); }  // frees every slot
    size_t size() const { return slots_.size(); }

private:
    const LanguageModel* model_;
    int64_t max_context_;
    std::map<int64_t, std::unique_ptr<Session>> slots_;
};

}  // namespace stac
