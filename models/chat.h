// Chat templates over a Session. Two formats, chosen by the tokenizer (chat_format_for):
// - UserAssistant (GPT-2 models): a turn appends "User: <line>\nAssistant:" (after a newline when
//   the transcript does not end with one; the system text before the first turn) and the reply
//   ends at its first newline, <|endoftext|> or max_new_tokens.
// - ChatML (SmolLM2-Instruct's chat template; used when the tokenizer has <|im_start|> and
//   <|im_end|>): <|im_start|>role\ncontent<|im_end|>\n per message, a system message first (the
//   template's default one when none is given), and <|im_start|>assistant\n to prompt a reply,
//   which ends at <|im_end|> or max_new_tokens.
// The cache keeps the whole transcript, so a turn processes only its new tokens: in ChatML a turn
// appends <|im_end|>\n (closing the previous reply, whose end token is never fed) and then its
// user message and the reply prompt, so the cached ids are exactly the template's ids for the
// conversation so far, with the replies' generated tokens as the assistant contents.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/generate.h"
#include "models/tokenizer.h"

namespace stac {

enum class ChatFormat { UserAssistant, ChatML };
ChatFormat chat_format_for(const Tokenizer& tok);

// SmolLM2-Instruct's template puts this system message first when the conversation has none.
inline constexpr std::string_view kChatMLDefaultSystem =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

struct ChatMessage {
    std::string role, content;  // role: system, user or assistant
};

// The ids of a conversation in ChatML, as transformers' apply_chat_template with SmolLM2's
// template gives them (tokenize=True). Special tokens are placed by id and message text is
// encoded with special tokens off, so text that spells "<|im_end|>" stays text (Hugging Face
// would make it the control token). Throws stac::Error if the tokenizer lacks <|im_start|> or
// <|im_end|>.
std::vector<int32_t> chatml_ids(const Tokenizer& tok, std::span<const ChatMessage> messages,
                                bool add_generation_prompt);

class ChatSession {
public:
    ChatSession(const LanguageModel& model, const Tokenizer& tok, const SamplingOptions& sampling,
                int64_t max_context = 0, std::string system = "");

    struct Reply {
        std::string text;  // the reply, without the newline or end token that ended it
        std::vector<int32_t> ids;  // its generated tokens (the end token is not among them)
        GenerateStats stats;
    };
    // One user turn; on_text receives the reply as it streams (whole UTF-8 characters).
    Reply turn(const std::string& user_line, int64_t max_new_tokens,
               const std::function<void(std::string_view)>& on_text = {});
    void reset();

    ChatFormat format() const { return format_; }
    Session& session() { return session_; }
    std::function<void(const FeedResult&)> on_window_shift;

private:
    const Tokenizer* tok_;
    Session session_;
    Sampler sampler_;
    std::string system_;
    ChatFormat format_;
    std::optional<int32_t> stop_;     // UserAssistant: <|endoftext|>; ChatML: <|im_end|>
    std::optional<int32_t> eos_;      // ChatML: also ends a reply (reported and fed) when not <|im_end|>
    bool at_line_start_ = true;  // UserAssistant: the cached transcript ends with a newline (or is empty)
    std::vector<int32_t> turn_ids(const std::string& user_line) const;
};

}  // namespace stac
