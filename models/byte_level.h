// The byte-level pieces shared by stac's BPE tokenizers (GPT-2's vocab.json/merges.txt and Hugging
// Face tokenizer.json): GPT-2's pre-tokenizer pattern as a scanner, and the printable spelling of
// bytes (bytes_to_unicode) that their vocabularies and merges are written in.
//
// The pattern is '(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ (tiktoken's
// gpt2 pat_str; Hugging Face's ByteLevel pre-tokenizer writes the contractions out, which matches
// the same strings). Classes come from utf8proc: \p{L} = L*, \p{N} = N*, \s = White_Space (Zs, Zl,
// Zp and U+0009..000D, U+0085). Text that is not valid UTF-8: each byte of an ill-formed sequence
// (Unicode Table 3-7) is one character of the "other" class, so every byte string has a split.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer.h"

namespace stac {

// The character classes of the GPT-2 pattern: \p{L}, \p{N}, \s, and everything else.
enum class Gpt2CharClass : uint8_t { Letter, Number, Space, Other };
Gpt2CharClass gpt2_char_class(char32_t cp);

namespace detail {

extern const std::array<Gpt2CharClass, 128> kGpt2AsciiClass;  // most text is ASCII

struct CharAt {
    Gpt2CharClass cls;
    uint32_t len;  // bytes
};

// The character starting at p; an ill-formed byte is a one-byte character of class Other.
inline CharAt char_at(const char* p, size_t left) {
    const auto b = static_cast<uint8_t>(*p);
    if (b < 0x80) return {kGpt2AsciiClass[b], 1};
    char32_t cp = 0;
    const size_t len = utf8_decode(std::string_view(p, left), &cp);
    if (len == 0) return {Gpt2CharClass::Other, 1};
    return {gpt2_char_class(cp), static_cast<uint32_t>(len)};
}

}  // namespace detail

// Calls emit(piece) for each piece of the GPT-2 pattern in text, in order (views into text that
// tile it). At each position the alternatives are tried in the pattern's order, and the first
// that matches wins (leftmost-first, as in a backtracking regex):
//   1 '(?:[sdmt]|ll|ve|re)   2-4 ' ?' + a run of one class (L, N, or other)
//   5 \s+(?!\S)              6 \s+
// 5 takes a whole whitespace run at the end of the text; before a non-space it gives back the
// run's last character (which then starts the next piece: " word" via 2-4, or alone via 6), and
// a run of one character before a non-space falls through to 6, which takes it alone.
template <typename Emit>
void for_each_gpt2_piece(std::string_view text, Emit&& emit) {
    using detail::char_at;
    using detail::CharAt;
    const char* s = text.data();
    const size_t n = text.size();
    auto run_end = [&](size_t q, Gpt2CharClass cls) {
        while (q < n) {
            const CharAt c = char_at(s + q, n - q);
            if (c.cls != cls) break;
            q += c.len;
        }
        return q;
    };
    size_t p = 0;
    while (p < n) {
        size_t end = 0;
        if (s[p] == '\'' && p + 1 < n) {
            const char a = s[p + 1];
            const char b = p + 2 < n ? s[p + 2] : '\0';
            if (a == 's' || a == 'd' || a == 'm' || a == 't') {
                end = p + 2;
            } else if ((a == 'l' && b == 'l') || (a == 'v' && b == 'e') || (a == 'r' && b == 'e')) {
                end = p + 3;
            }
        }
        if (end == 0) {
            const CharAt c = char_at(s + p, n - p);
            if (c.cls != Gpt2CharClass::Space) {
                end = run_end(p + c.len, c.cls);
            } else {
                const CharAt d = p + 1 < n ? char_at(s + p + 1, n - p - 1) : CharAt{c.cls, 0};
                if (s[p] == ' ' && d.cls != Gpt2CharClass::Space) {
                    end = run_end(p + 1 + d.len, d.cls);  // " " + a run of L, N or other
                } else {
                    size_t q = p + c.len, last = p;  // last: start of the run's last character
                    while (q < n) {
                        const CharAt w = char_at(s + q, n - q);
                        if (w.cls != Gpt2CharClass::Space) break;
                        last = q;
                        q += w.len;
                    }
                    end = (q == n || last == p) ? q : last;
                }
            }
        }
        emit(text.substr(p, end - p));
        p = end;
    }
}

// The pieces of for_each_gpt2_piece as a vector. Special tokens are not looked for here.
std::vector<std::string_view> gpt2_split(std::string_view text);

// Byte-level spelling (GPT-2's bytes_to_unicode, tiktoken's data_gym_byte_to_byte): each byte is
// one printable character. Bytes that are printable Latin-1 other than space stand for
// themselves; the other 68 are U+0100.. in byte order (space is U+0120 'Ġ', newline U+010A 'Ċ').
// byte_level_to_bytes: the bytes a spelling stands for; nullopt if it has a character outside the
// 256 (or is not valid UTF-8).
std::optional<std::string> byte_level_to_bytes(std::string_view spelling);
std::string bytes_to_byte_level(std::string_view bytes);

}  // namespace stac
