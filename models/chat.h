// The User:/Assistant: chat template over a Session. A turn appends "User: <line>\nAssistant:"
// (after a newline when the transcript does not end with one; the system text before the first
// turn) and generates a reply that ends at its first newline, <|endoftext|> or max_new_tokens.
// The cache keeps the whole transcript, so only the new turn is processed.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "models/generate.h"
#include "models/tokenizer.h"

namespace stac {

class ChatSession {
public:
    ChatSession(const LanguageModel& model, const Tokenizer& tok, const SamplingOptions& sampling,
                int64_t max_context = 0, std::string system = "");

    struct Reply {
        std::string text;  // the reply, without the newline that ended it
        GenerateStats stats;
    };
    // One user turn; on_text receives the reply as it streams (whole UTF-8 characters).
    Reply turn(const std::string& user_line, int64_t max_new_tokens,
               const std::function<void(std::string_view)>& on_text = {});
    void reset();

    Session& session() { return session_; }
    std::function<void(const FeedResult&)> on_window_shift;

private:
    const Tokenizer* tok_;
    Session session_;
    Sampler sampler_;
    std::string system_;
    std::optional<int32_t> stop_;
    bool at_line_start_ = true;  // the cached transcript ends with a newline (or is empty)
};

}  // namespace stac
