#include "models/chat.h"

namespace stac {

ChatSession::ChatSession(const LanguageModel& model, const Tokenizer& tok, const SamplingOptions& sampling,
                         int64_t max_context, std::string system)
    : tok_(&tok), session_(model, max_context), sampler_(sampling, model.info().vocab_size), system_(std::move(system)) {
    const auto eos = tok.eos_id();
    if (eos && *eos < model.info().vocab_size) stop_ = eos;
}

void ChatSession::reset() {
    session_.reset();
    at_line_start_ = true;
}

ChatSession::Reply ChatSession::turn(const std::string& user_line, int64_t max_new_tokens,
                                     const std::function<void(std::string_view)>& on_text) {
    std::string text;
    if (session_.position() == 0 && !system_.empty()) text = system_ + "\n";
    else if (!at_line_start_) text = "\n";
    text += "User: " + user_line + "\nAssistant:";
    const std::vector<int32_t> ids = tok_->encode(text);

    GenerateOptions g;
    g.max_new_tokens = max_new_tokens;
    g.stop_id = stop_;
    g.feed_last = true;  // the cache holds the whole transcript
    g.on_window_shift = on_window_shift;
    Reply r;
    Utf8StreamDecoder dec;
    bool ended_line = false;
    auto emit = [&](std::string_view piece) {
        if (piece.empty()) return;
        r.text += piece;
        if (on_text) on_text(piece);
    };
    r.stats = generate(session_, sampler_, ids, g, [&](int32_t id) {
        const std::string_view bytes = tok_->token_bytes(id);
        if (const auto nl = bytes.find('\n'); nl != std::string_view::npos) {
            // The reply ends at its first newline; the token stays in the cache.
            emit(dec.push(bytes.substr(0, nl)));
            ended_line = nl + 1 == bytes.size();
            return false;
        }
        emit(dec.push(bytes));
        return true;
    });
    emit(dec.flush());
    at_line_start_ = ended_line;
    return r;
}

}  // namespace stac
