// The decode loop: feed a prompt to a Session, then sample and feed one token at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>

#include "models/sampler.h"
#include "models/session.h"

namespace stac {

struct GenerateOptions {
    int64_t max_new_tokens = 64;
    std::optional<int32_t> stop_id;  // ends generation when sampled; it is neither reported nor fed
    // Feed the last reported token too, so the cache holds the whole transcript (chat wants this;
    // a one-shot generate saves the forward).
    bool feed_last = false;
    std::function<void(const FeedResult&)> on_window_shift;  // told when the context window moved
};

struct GenerateStats {
    int64_t prompt_tokens = 0, new_tokens = 0;
    double prefill_seconds = 0, decode_seconds = 0;  // decode: the forwards of generated tokens
    bool stopped_by_id = false, stopped_by_callback = false;
};

// Feeds `prompt` (may be empty when the session already holds logits), then samples up to
// max_new_tokens ids, reporting each to on_token (return false to stop after it).
GenerateStats generate(Session& session, Sampler& sampler, std::span<const int32_t> prompt, const GenerateOptions& opt,
                       const std::function<bool(int32_t)>& on_token);

}  // namespace stac
