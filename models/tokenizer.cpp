// Utf8StreamDecoder: holds back a UTF-8 character that a token boundary cut in two.
#include "models/tokenizer.h"

namespace stac {

namespace {

// The bytes allowed after a lead byte, from Unicode Table 3-7 (well-formed UTF-8): the second
// byte's range depends on the lead (it excludes overlongs, surrogates and > U+10FFFF); later
// bytes are 80..BF. len 0: not a lead byte.
struct Lead {
    uint8_t len, lo, hi;
};

Lead lead_of(uint8_t b) {
    if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
    if (b == 0xE0) return {3, 0xA0, 0xBF};
    if (b == 0xED) return {3, 0x80, 0x9F};
    if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
    if (b == 0xF0) return {4, 0x90, 0xBF};
    if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
    if (b == 0xF4) return {4, 0x80, 0x8F};
    return {0, 0, 0};
}

}  // namespace

size_t utf8_decode(std::string_view s, char32_t* cp) {
    if (s.empty()) return 0;
    const auto b0 = static_cast<uint8_t>(s[0]);
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    const Lead lead = lead_of(b0);
    if (lead.len == 0 || s.size() < lead.len) return 0;
    char32_t c = b0 & (0x7F >> lead.len);
    for (size_t i = 1; i < lead.len; ++i) {
        const auto b = static_cast<uint8_t>(s[i]);
        if (i == 1 ? (b < lead.lo || b > lead.hi) : (b < 0x80 || b > 0xBF)) return 0;
        c = (c << 6) | (b & 0x3F);
    }
    *cp = c;
    return lead.len;
}

size_t utf8_incomplete_tail(std::string_view s) {
    const size_t n = s.size();
    for (size_t k = 1; k <= 3 && k <= n; ++k) {
        const auto b = static_cast<uint8_t>(s[n - k]);
        if (b >= 0x80 && b <= 0xBF) continue;  // a continuation byte: the lead is further back
        const Lead lead = lead_of(b);
        if (lead.len <= k) return 0;  // ASCII, an invalid byte, or a sequence already complete
        for (size_t i = 1; i < k; ++i) {
            const auto c = static_cast<uint8_t>(s[n - k + i]);
            if (i == 1 ? (c < lead.lo || c > lead.hi) : (c < 0x80 || c > 0xBF)) return 0;
        }
        return k;
    }
    return 0;
}

std::string Utf8StreamDecoder::push(std::string_view bytes) {
    held_.append(bytes);
    const size_t keep = utf8_incomplete_tail(held_);
    std::string out = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return out;
}

std::string Utf8StreamDecoder::flush() {
    std::string out;
    out.swap(held_);
    return out;
}

}  // namespace stac
