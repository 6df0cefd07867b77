// The GPT-2 pattern's character classes (from utf8proc) and the byte-level spelling.
#include "models/byte_level.h"

#include <utf8proc.h>

namespace stac {

Gpt2CharClass gpt2_char_class(char32_t cp) {
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
        case UTF8PROC_CATEGORY_LU:
        case UTF8PROC_CATEGORY_LL:
        case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM:
        case UTF8PROC_CATEGORY_LO: return Gpt2CharClass::Letter;
        case UTF8PROC_CATEGORY_ND:
        case UTF8PROC_CATEGORY_NL:
        case UTF8PROC_CATEGORY_NO: return Gpt2CharClass::Number;
        // White_Space is exactly Zs, Zl, Zp plus these six controls (PropList.txt, Unicode 15).
        case UTF8PROC_CATEGORY_ZS:
        case UTF8PROC_CATEGORY_ZL:
        case UTF8PROC_CATEGORY_ZP: return Gpt2CharClass::Space;
        default:
            return (cp >= 0x09 && cp <= 0x0D) || cp == 0x85 ? Gpt2CharClass::Space
                                                            : Gpt2CharClass::Other;
    }
}

namespace detail {
const std::array<Gpt2CharClass, 128> kGpt2AsciiClass = [] {
    std::array<Gpt2CharClass, 128> t{};
    for (char32_t c = 0; c < 128; ++c) t[c] = gpt2_char_class(c);
    return t;
}();
}  // namespace detail

std::vector<std::string_view> gpt2_split(std::string_view text) {
    std::vector<std::string_view> pieces;
    for_each_gpt2_piece(text, [&](std::string_view piece) { pieces.push_back(piece); });
    return pieces;
}

namespace {

struct ByteAlphabet {
    std::array<char32_t, 256> to_char{};
    std::array<int16_t, 256 + 68> to_byte{};

    ByteAlphabet() {
        to_byte.fill(-1);
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            to_char[b] = printable ? char32_t(b) : char32_t(256 + n++);
            to_byte[to_char[b]] = static_cast<int16_t>(b);
        }
    }
};

const ByteAlphabet kAlphabet;

}  // namespace

std::optional<std::string> byte_level_to_bytes(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    while (!s.empty()) {
        char32_t cp = 0;
        const size_t len = utf8_decode(s, &cp);
        if (len == 0 || cp >= kAlphabet.to_byte.size() || kAlphabet.to_byte[cp] < 0) return {};
        out.push_back(static_cast<char>(kAlphabet.to_byte[cp]));
        s.remove_prefix(len);
    }
    return out;
}

std::string bytes_to_byte_level(std::string_view bytes) {
    std::string out;
    for (unsigned char b : bytes) {
        const char32_t c = kAlphabet.to_char[b];
        if (c < 0x80) {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back(static_cast<char>(0xC0 | (c >> 6)));
            out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
        }
    }
    return out;
}

}  // namespace stac
