// Gpt2Tokenizer: loading vocab.json/merges.txt, the GPT-2 pre-tokenizer, and tiktoken's BPE.
#include "models/gpt2_tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "core/error.h"

namespace stac {

namespace fs = std::filesystem;

// ------------------------------------------------------------------ character classes

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

namespace {

constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();
constexpr std::string_view kEndOfText = "<|endoftext|>";

// Most text is ASCII: its classes are looked up here (filled from utf8proc, not by hand).
const std::array<Gpt2CharClass, 128> kAsciiClass = [] {
    std::array<Gpt2CharClass, 128> t{};
    for (char32_t c = 0; c < 128; ++c) t[c] = gpt2_char_class(c);
    return t;
}();

struct CharAt {
    Gpt2CharClass cls;
    uint32_t len;  // bytes
};

// The character starting at p; an ill-formed byte is a one-byte character of class Other.
inline CharAt char_at(const char* p, size_t left) {
    const auto b = static_cast<uint8_t>(*p);
    if (b < 0x80) return {kAsciiClass[b], 1};
    char32_t cp = 0;
    const size_t len = utf8_decode(std::string_view(p, left), &cp);
    if (len == 0) return {Gpt2CharClass::Other, 1};
    return {gpt2_char_class(cp), static_cast<uint32_t>(len)};
}

// The GPT-2 pattern as a scanner. At each position the alternatives are tried in the pattern's
// order, and the first that matches wins (leftmost-first, as in a backtracking regex):
//   1 '(?:[sdmt]|ll|ve|re)   2-4 ' ?' + a run of one class (L, N, or other)
//   5 \s+(?!\S)              6 \s+
// 5 takes a whole whitespace run at the end of the text; before a non-space it gives back the
// run's last character (which then starts the next piece: " word" via 2-4, or alone via 6), and
// a run of one character before a non-space falls through to 6, which takes it alone.
template <typename Emit>
void for_each_piece(std::string_view text, Emit&& emit) {
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

// ------------------------------------------------------------------ data-gym byte alphabet

// vocab.json and merges.txt spell each byte as one printable character (GPT-2's
// bytes_to_unicode, tiktoken's data_gym_byte_to_byte): bytes that are printable Latin-1 other
// than space stand for themselves; the other 68 are U+0100.. in byte order.
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

// Data-gym spelling -> bytes; nullopt if s has a character outside the alphabet (or bad UTF-8).
std::optional<std::string> from_data_gym(std::string_view s) {
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

std::string to_data_gym(std::string_view bytes) {
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

std::string read_file(const fs::path& path) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) fail("{}: is a directory, expected a file", path.string());
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) fail("{}: read error", path.string());
    return std::move(ss).str();
}

// vocab.json must be one flat object {"token": id, ...}; SAX so that duplicate keys and
// non-integer ids are seen and named (a DOM parse keeps the last duplicate silently).
class VocabReader final : public nlohmann::json_sax<nlohmann::json> {
public:
    std::vector<std::pair<std::string, int64_t>> entries;  // (data-gym spelling, id)
    std::string error;

    bool null() override { return not_an_id("null"); }
    bool boolean(bool) override { return not_an_id("a boolean"); }
    bool number_integer(number_integer_t v) override { return id(v); }
    bool number_unsigned(number_unsigned_t v) override {
        return id(v > uint64_t(std::numeric_limits<int64_t>::max()) ? -1 : int64_t(v));
    }
    bool number_float(number_float_t, const string_t& s) override {
        return not_an_id("the number " + s);
    }
    bool string(string_t&) override { return not_an_id("a string"); }
    bool binary(binary_t&) override { return not_an_id("binary data"); }
    bool start_object(std::size_t) override {
        if (depth_++ == 0) return true;
        return not_an_id("an object");
    }
    bool end_object() override {
        --depth_;
        return true;
    }
    bool start_array(std::size_t) override { return not_an_id("an array"); }
    bool end_array() override { return true; }
    bool key(string_t& k) override {
        key_ = k;
        return true;
    }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
        error = e.what();
        return false;
    }

private:
    bool not_an_id(const std::string& what) {
        error = depth_ == 0 ? fmt::format("the top level is {}, expected an object {{\"token\": id, ...}}", what)
                            : fmt::format("token \"{}\" has {}, expected an integer id", key_, what);
        return false;
    }
    bool id(int64_t v) {
        if (depth_ == 0) return not_an_id("a number");
        entries.emplace_back(key_, v);
        return true;
    }
    int depth_ = 0;
    std::string key_;
};

}  // namespace

std::vector<std::string_view> gpt2_split(std::string_view text) {
    std::vector<std::string_view> pieces;
    for_each_piece(text, [&](std::string_view piece) { pieces.push_back(piece); });
    return pieces;
}

// ------------------------------------------------------------------ the tokenizer

struct Gpt2Tokenizer::Impl {
    // Token bytes in id order, one allocation: token id is arena[offset[id], offset[id + 1]).
    std::string arena;
    std::vector<uint32_t> offset;  // [V + 1]

    // rank: BPE priority, lower merges first. Single bytes get 0..255 (never compared: pairs
    // are two bytes or more), merges.txt line i makes rank 256 + i; kNoRank marks tokens that
    // BPE never makes (<|endoftext|>, and any vocab entry no merge produces).
    struct Entry {
        uint32_t rank;
        int32_t id;
    };
    std::unordered_map<std::string_view, Entry> by_bytes;  // views into arena
    std::array<int32_t, 256> byte_id{};
    std::optional<int32_t> eot;

    int32_t vocab_size() const { return static_cast<int32_t>(offset.size() - 1); }

    std::string_view bytes_of(int32_t id) const {
        if (id < 0 || id >= vocab_size())
            fail("GPT-2 tokenizer: token id {} is outside the vocabulary [0, {})", id, vocab_size());
        return std::string_view(arena).substr(offset[id], offset[id + 1] - offset[id]);
    }

    uint32_t rank(std::string_view bytes) const {
        const auto it = by_bytes.find(bytes);
        return it == by_bytes.end() ? kNoRank : it->second.rank;
    }

    // The id of a part that BPE produced (a byte, or bytes some merge made: always present).
    int32_t id_of_part(std::string_view bytes) const {
        if (bytes.size() == 1) return byte_id[static_cast<uint8_t>(bytes[0])];
        return by_bytes.find(bytes)->second.id;
    }

    // Buffers reused across the pieces of one encode() call.
    struct Scratch {
        std::vector<std::pair<uint32_t, uint32_t>> parts;  // (start, rank of this part + next)
        std::vector<uint32_t> next, prev;                   // [n]: the heap version's list
        struct Candidate {
            uint32_t rank, start, end;  // merge the part at start with its neighbour: [start, end)
        };
        std::vector<Candidate> heap;
    };

    // tiktoken's _byte_pair_merge, line for line.
    void bpe_scan(std::string_view piece, Scratch& sc, std::vector<int32_t>& out) const {
        auto& parts = sc.parts;
        parts.clear();
        const size_t n = piece.size();
        std::pair<uint32_t, size_t> min_rank{kNoRank, SIZE_MAX};
        for (size_t i = 0; i + 1 < n; ++i) {
            const uint32_t r = rank(piece.substr(i, 2));
            if (r < min_rank.first) min_rank = {r, i};
            parts.emplace_back(uint32_t(i), r);
        }
        parts.emplace_back(uint32_t(n - 1), kNoRank);
        parts.emplace_back(uint32_t(n), kNoRank);
        auto get_rank = [&](size_t i) {
            if (i + 3 < parts.size())
                return rank(piece.substr(parts[i].first, parts[i + 3].first - parts[i].first));
            return kNoRank;
        };
        while (min_rank.first != kNoRank) {
            const size_t i = min_rank.second;
            if (i > 0) parts[i - 1].second = get_rank(i - 1);
            parts[i].second = get_rank(i);
            parts.erase(parts.begin() + std::ptrdiff_t(i) + 1);
            min_rank = {kNoRank, SIZE_MAX};
            for (size_t j = 0; j + 1 < parts.size(); ++j)
                if (parts[j].second < min_rank.first) min_rank = {parts[j].second, j};
        }
        for (size_t i = 0; i + 1 < parts.size(); ++i)
            out.push_back(id_of_part(piece.substr(parts[i].first, parts[i + 1].first - parts[i].first)));
    }

    // The same merges in the same order: a min-heap of (rank, start) picks the lowest rank and,
    // among equal ranks, the leftmost, as the scan does. Parts are a linked list by start byte;
    // a merge keeps the left part's start, so a candidate is stale unless its left part is still
    // there and it and its right neighbour still end at the candidate's end.
    void bpe_heap(std::string_view piece, Scratch& sc, std::vector<int32_t>& out) const {
        using Candidate = Scratch::Candidate;
        const auto n = static_cast<uint32_t>(piece.size());
        auto& next = sc.next;
        auto& prev = sc.prev;
        auto& heap = sc.heap;
        next.resize(n);
        prev.resize(n);
        heap.clear();
        constexpr uint32_t kGone = kNoRank;  // next[] of a part merged into its left neighbour
        auto later = [](const Candidate& a, const Candidate& b) {
            return a.rank != b.rank ? a.rank > b.rank : a.start > b.start;
        };
        auto push = [&](uint32_t start, uint32_t end) {
            const uint32_t r = rank(piece.substr(start, end - start));
            if (r == kNoRank) return;
            heap.push_back({r, start, end});
            std::push_heap(heap.begin(), heap.end(), later);
        };
        for (uint32_t i = 0; i < n; ++i) {
            next[i] = i + 1;
            prev[i] = i - 1;  // wraps for i == 0; never read there
        }
        for (uint32_t i = 0; i + 1 < n; ++i) push(i, i + 2);
        while (!heap.empty()) {
            std::pop_heap(heap.begin(), heap.end(), later);
            const Candidate c = heap.back();
            heap.pop_back();
            const uint32_t i = c.start;
            if (next[i] == kGone || next[i] >= n || next[next[i]] != c.end) continue;  // stale
            next[next[i]] = kGone;
            next[i] = c.end;
            if (c.end < n) prev[c.end] = i;
            if (i > 0) push(prev[i], c.end);
            if (c.end < n) push(i, next[c.end]);
        }
        for (uint32_t i = 0; i < n; i = next[i]) out.push_back(id_of_part(piece.substr(i, next[i] - i)));
    }

    void encode_piece(std::string_view piece, Scratch& sc, std::vector<int32_t>& out) const {
        if (piece.size() == 1) {
            out.push_back(byte_id[static_cast<uint8_t>(piece[0])]);
            return;
        }
        if (const auto it = by_bytes.find(piece); it != by_bytes.end() && it->second.rank != kNoRank) {
            out.push_back(it->second.id);  // tiktoken's shortcut: a piece that is a token
            return;
        }
        if (piece.size() < kHeapMinBytes) {
            bpe_scan(piece, sc, out);
        } else {
            bpe_heap(piece, sc, out);
        }
    }

    void encode_ordinary(std::string_view text, Scratch& sc, std::vector<int32_t>& out) const {
        for_each_piece(text, [&](std::string_view piece) { encode_piece(piece, sc, out); });
    }
};

Gpt2Tokenizer::Gpt2Tokenizer(std::unique_ptr<const Impl> impl) : impl_(std::move(impl)) {}
Gpt2Tokenizer::Gpt2Tokenizer(Gpt2Tokenizer&&) noexcept = default;
Gpt2Tokenizer& Gpt2Tokenizer::operator=(Gpt2Tokenizer&&) noexcept = default;
Gpt2Tokenizer::~Gpt2Tokenizer() = default;

Gpt2Tokenizer Gpt2Tokenizer::load_dir(const fs::path& dir) {
    return load(dir / "vocab.json", dir / "merges.txt");
}

Gpt2Tokenizer Gpt2Tokenizer::load(const fs::path& vocab_json, const fs::path& merges_txt) {
    const std::string vpath = vocab_json.string();
    const std::string mpath = merges_txt.string();
    auto impl = std::make_unique<Impl>();

    // ---- vocab.json: data-gym spelling -> id, ids exactly 0..N-1
    {
        const std::string text = read_file(vocab_json);
        VocabReader reader;
        if (!nlohmann::json::sax_parse(text, &reader) || !reader.error.empty())
            fail("{}: not a GPT-2 vocab.json: {}", vpath,
                 reader.error.empty() ? std::string("bad JSON") : reader.error);
        const size_t n = reader.entries.size();
        if (n < 256) fail("{}: has {} tokens, expected at least the 256 bytes", vpath, n);
        if (n > size_t(std::numeric_limits<int32_t>::max()))
            fail("{}: has {} tokens, more than int32 ids can hold", vpath, n);
        std::vector<std::string> bytes(n);
        std::vector<const std::string*> spelling(n, nullptr);
        for (const auto& [key, id] : reader.entries) {
            if (id < 0 || id >= int64_t(n))
                fail("{}: token \"{}\" has id {}, expected ids 0..{} (one per token)", vpath, key, id, n - 1);
            if (spelling[id])
                fail("{}: id {} is given to both \"{}\" and \"{}\"", vpath, id, *spelling[id], key);
            std::optional<std::string> b = from_data_gym(key);
            if (!b)
                fail("{}: token \"{}\" (id {}) has a character outside GPT-2's byte alphabet", vpath, key, id);
            if (b->empty()) fail("{}: token id {} is the empty string", vpath, id);
            spelling[id] = &key;
            bytes[id] = std::move(*b);
        }
        impl->offset.reserve(n + 1);
        impl->offset.push_back(0);
        for (const auto& b : bytes) {
            impl->arena += b;
            impl->offset.push_back(static_cast<uint32_t>(impl->arena.size()));
        }
        impl->by_bytes.reserve(n);
        for (size_t id = 0; id < n; ++id) {
            const auto [it, fresh] =
                impl->by_bytes.emplace(impl->bytes_of(int32_t(id)), Impl::Entry{kNoRank, int32_t(id)});
            if (!fresh)
                fail("{}: token \"{}\" appears twice (ids {} and {})", vpath, *spelling[id], it->second.id, id);
        }
    }
    for (int b = 0; b < 256; ++b) {
        const std::string one(1, static_cast<char>(b));
        const auto it = impl->by_bytes.find(one);
        if (it == impl->by_bytes.end())
            fail("{}: no token for byte 0x{:02X} (\"{}\"); byte-level BPE needs all 256", vpath, b,
                 to_data_gym(one));
        it->second.rank = static_cast<uint32_t>(b);
        impl->byte_id[b] = it->second.id;
    }
    if (const auto it = impl->by_bytes.find(kEndOfText); it != impl->by_bytes.end()) impl->eot = it->second.id;

    // ---- merges.txt: line i (after "#version") makes rank 256 + i
    {
        const std::string text = read_file(merges_txt);
        std::string_view rest = text;
        uint32_t line_no = 0, merges = 0;
        std::vector<uint32_t> line_of_merge;  // for the duplicate-merge message
        while (!rest.empty()) {
            const size_t eol = rest.find('\n');
            std::string_view line = rest.substr(0, eol);
            rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
            ++line_no;
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
            const size_t sp = line.find(' ');
            if (sp == 0 || sp == std::string_view::npos || sp + 1 == line.size() ||
                line.find(' ', sp + 1) != std::string_view::npos)
                fail("{}: line {}: \"{}\" is not two tokens separated by one space", mpath, line_no, line);
            const std::string_view left = line.substr(0, sp), right = line.substr(sp + 1);
            std::string merged;
            for (const std::string_view part : {left, right}) {
                const std::optional<std::string> b = from_data_gym(part);
                if (!b)
                    fail("{}: line {}: \"{}\" has a character outside GPT-2's byte alphabet", mpath,
                         line_no, part);
                if (!impl->by_bytes.contains(*b))
                    fail("{}: line {}: \"{}\" is not a token of {}", mpath, line_no, part, vpath);
                merged += *b;
            }
            const auto it = impl->by_bytes.find(merged);
            if (it == impl->by_bytes.end())
                fail("{}: line {}: merging \"{}\" and \"{}\" makes \"{}\", which is not a token of {}",
                     mpath, line_no, left, right, to_data_gym(merged), vpath);
            if (merged == kEndOfText)
                fail("{}: line {}: makes the special token {}, which BPE must never produce", mpath,
                     line_no, kEndOfText);
            if (it->second.rank != kNoRank)
                fail("{}: line {}: \"{}\" is made twice (line {} made it before)", mpath, line_no,
                     to_data_gym(merged), line_of_merge[it->second.rank - 256]);
            it->second.rank = 256 + merges++;
            line_of_merge.push_back(line_no);
        }
        if (merges == 0) fail("{}: has no merges", mpath);
    }
    return Gpt2Tokenizer(std::move(impl));
}

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text, EncodeOptions opt) const {
    const Impl& im = *impl_;
    std::vector<int32_t> out;
    out.reserve(text.size() / 4 + 16);
    Impl::Scratch sc;
    if (!opt.allow_special || !im.eot) {
        im.encode_ordinary(text, sc, out);
        return out;
    }
    // Specials split the text; the parts between are encoded on their own, as tiktoken does.
    size_t start = 0;
    for (size_t at; (at = text.find(kEndOfText, start)) != std::string_view::npos;
         start = at + kEndOfText.size()) {
        im.encode_ordinary(text.substr(start, at - start), sc, out);
        out.push_back(*im.eot);
    }
    im.encode_ordinary(text.substr(start), sc, out);
    return out;
}

std::string Gpt2Tokenizer::decode(std::span<const int32_t> ids) const {
    size_t total = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= vocab_size())
            fail("GPT-2 tokenizer: cannot decode id {} (position {}): outside the vocabulary [0, {})",
                 ids[i], i, vocab_size());
        total += impl_->offset[ids[i] + 1] - impl_->offset[ids[i]];
    }
    std::string out;
    out.reserve(total);
    for (const int32_t id : ids) out += impl_->bytes_of(id);
    return out;
}

std::string_view Gpt2Tokenizer::token_bytes(int32_t id) const { return impl_->bytes_of(id); }

int32_t Gpt2Tokenizer::vocab_size() const { return impl_->vocab_size(); }

std::optional<int32_t> Gpt2Tokenizer::eos_id() const { return impl_->eot; }

std::optional<int32_t> Gpt2Tokenizer::token_id(std::string_view bytes) const {
    const auto it = impl_->by_bytes.find(bytes);
    if (it == impl_->by_bytes.end()) return std::nullopt;
    return it->second.id;
}

std::vector<int32_t> Gpt2Tokenizer::bpe_reference(std::string_view piece) const {
    std::vector<int32_t> out;
    Impl::Scratch sc;
    if (!piece.empty()) impl_->bpe_scan(piece, sc, out);
    return out;
}

std::vector<int32_t> Gpt2Tokenizer::bpe_heap(std::string_view piece) const {
    std::vector<int32_t> out;
    Impl::Scratch sc;
    if (!piece.empty()) impl_->bpe_heap(piece, sc, out);
    return out;
}

}  // namespace stac
