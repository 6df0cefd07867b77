// stac::Tokenizer: the interface every tokenizer implements (text bytes <-> token ids), and the
// UTF-8 stream decoder that turns generated tokens into printable text.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace stac {

struct EncodeOptions {
    // true: "<|endoftext|>" in the text becomes its special id (tiktoken allowed_special="all");
    // false: it is ordinary text, BPE'd like any other (tiktoken disallowed_special=()).
    bool allow_special = true;
};

// Text is bytes: encode() takes any byte string (valid UTF-8 or not) and decode(encode(x)) == x.
// Implementations are immutable after loading, so one instance may be shared by threads.
class Tokenizer {
public:
    virtual ~Tokenizer() = default;
    virtual std::vector<int32_t> encode(std::string_view text, EncodeOptions opt = {}) const = 0;
    // The concatenated raw bytes of the tokens (not necessarily valid UTF-8); throws stac::Error
    // naming the id if one is outside [0, vocab_size()).
    virtual std::string decode(std::span<const int32_t> ids) const = 0;
    // The bytes of one token; throws stac::Error on an id outside [0, vocab_size()).
    virtual std::string_view token_bytes(int32_t id) const = 0;
    virtual int32_t vocab_size() const = 0;
    virtual std::optional<int32_t> eos_id() const = 0;  // <|endoftext|> for GPT-2
    // Exact byte string -> id, if some token has exactly these bytes (special tokens included).
    virtual std::optional<int32_t> token_id(std::string_view token_bytes) const = 0;
};

// Turns a stream of token byte strings into UTF-8 text pieces. A character split across tokens
// (common: GPT-2 has byte tokens, so CJK and emoji are often cut mid-character) is held back
// until the bytes that complete it arrive. Only a proper prefix of a well-formed sequence at the
// very end is held (at most 3 bytes); bytes that can never become valid UTF-8 are passed through
// unchanged at once, and a held prefix that the next bytes do not complete is passed through
// too, so the concatenation of all push() and flush() results is exactly the input bytes. For
// valid UTF-8 input every returned piece is valid UTF-8.
class Utf8StreamDecoder {
public:
    std::string push(std::string_view bytes);
    std::string flush();  // whatever is held (an incomplete sequence at the end of the stream)

private:
    std::string held_;
};

// The length (1..4) of the well-formed UTF-8 sequence that starts s, its code point in *cp; 0 if
// s is empty or starts with an ill-formed sequence (Unicode Table 3-7).
size_t utf8_decode(std::string_view s, char32_t* cp);

// How many bytes at the end of s are a proper prefix of a well-formed UTF-8 sequence (0..3):
// the bytes Utf8StreamDecoder holds back.
size_t utf8_incomplete_tail(std::string_view s);

}  // namespace stac
