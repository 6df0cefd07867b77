#include "models/chat.h"

#include "core/error.h"

namespace stac {

namespace {

struct ChatMLIds {
    int32_t start, end;
};

std::optional<ChatMLIds> chatml_tokens(const Tokenizer& tok) {
    const auto s = tok.token_id("<|im_start|>"), e = tok.token_id("<|im_end|>");
    if (!s || !e) return std::nullopt;
    return ChatMLIds{*s, *e};
}

void append(std::vector<int32_t>& out, const std::vector<int32_t>& ids) { out.insert(out.end(), ids.begin(), ids.end()); }

// <|im_start|>role\ncontent<|im_end|>\n
void append_message(std::vector<int32_t>& out, const Tokenizer& tok, ChatMLIds t, std::string_view role,
                    std::string_view content) {
    out.push_back(t.start);
    append(out, tok.encode(std::string(role) + "\n" + std::string(content), {.allow_special = false}));
    out.push_back(t.end);
    append(out, tok.encode("\n", {.allow_special = false}));
}

void append_reply_prompt(std::vector<int32_t>& out, const Tokenizer& tok, ChatMLIds t) {
    out.push_back(t.start);
    append(out, tok.encode("assistant\n", {.allow_special = false}));
}

}  // namespace

ChatFormat chat_format_for(const Tokenizer& tok) {
    return chatml_tokens(tok) ? ChatFormat::ChatML : ChatFormat::UserAssistant;
}

std::vector<int32_t> chatml_ids(const Tokenizer& tok, std::span<const ChatMessage> messages, bool add_generation_prompt) {
    const auto t = chatml_tokens(tok);
    if (!t) fail("ChatML needs the tokens <|im_start|> and <|im_end|>, which this tokenizer does not have");
    std::vector<int32_t> out;
    for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0 && messages[0].role != "system") append_message(out, tok, *t, "system", kChatMLDefaultSystem);
        append_message(out, tok, *t, messages[i].role, messages[i].content);
    }
    if (add_generation_prompt) append_reply_prompt(out, tok, *t);
    return out;
}

ChatSession::ChatSession(const LanguageModel& model, const Tokenizer& tok, const SamplingOptions& sampling,
                         int64_t max_context, std::string system)
    : tok_(&tok),
      session_(model, max_context),
      sampler_(sampling, model.info().vocab_size),
      system_(std::move(system)),
      format_(chat_format_for(tok)) {
    const auto eos = tok.eos_id();
    const int64_t V = model.info().vocab_size;
    if (format_ == ChatFormat::ChatML) {
        stop_ = chatml_tokens(tok)->end;
        if (eos && *eos != *stop_ && *eos < V) eos_ = eos;
    } else if (eos && *eos < V) {
        stop_ = eos;
    }
}

void ChatSession::reset() {
    session_.reset();
    at_line_start_ = true;
}

std::vector<int32_t> ChatSession::turn_ids(const std::string& user_line) const {
    if (format_ == ChatFormat::ChatML) {
        const ChatMLIds t = *chatml_tokens(*tok_);
        std::vector<int32_t> ids;
        if (session_.position() == 0) {
            append_message(ids, *tok_, t, "system", system_.empty() ? std::string(kChatMLDefaultSystem) : system_);
        } else {
            ids.push_back(t.end);  // closes the previous reply: its <|im_end|> was sampled, not fed
            append(ids, tok_->encode("\n", {.allow_special = false}));
        }
        append_message(ids, *tok_, t, "user", user_line);
        append_reply_prompt(ids, *tok_, t);
        return ids;
    }
    std::string text;
    if (session_.position() == 0 && !system_.empty()) text = system_ + "\n";
    else if (!at_line_start_) text = "\n";
    text += "User: " + user_line + "\nAssistant:";
    return tok_->encode(text);
}

ChatSession::Reply ChatSession::turn(const std::string& user_line, int64_t max_new_tokens,
                                     const std::function<void(std::string_view)>& on_text) {
    const std::vector<int32_t> ids = turn_ids(user_line);
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
        r.ids.push_back(id);
        if (format_ == ChatFormat::ChatML) {
            if (eos_ && id == *eos_) return false;  // the end of the text: stays in the cache, not shown
            emit(dec.push(tok_->token_bytes(id)));
            return true;
        }
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
